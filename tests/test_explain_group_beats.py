"""Median beats per group (the AnyECG-CCTA figure) on synthetic records with known ST elevation,
and `finetune/report.py --beats-by`."""

import json
import os
import subprocess
import sys

import numpy as np

from ecgjax.data import sources
from ecgjax.data.formats import synthetic
from ecgjax.eval import predictions as pred_lib
from ecgjax.explain import group_beats

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = "synthetic:60?seed=4&fs=250&seconds=6"


def _truth(n=60):
  return np.stack([synthetic.generate_record(4, i, fs=250.0, seconds=6.0)[1]
                   for i in range(n)])


def test_groups_by_label_show_the_st_elevation_and_count_what_they_skip():
  source = sources.open_source(SPEC)
  y = _truth()
  ste = y[:, synthetic.LABEL_NAMES.index("STE")]
  ids = source.metadata()["record_id"]
  groups, order = group_beats.groups_of(ids, ste, by="label", label="STE")
  groups["not-a-record"] = "STE"
  gb = group_beats.group_beats(source, groups, order=order)
  assert gb.groups == ("STE", "not STE") and gb.n.tolist() == [int(ste.sum()),
                                                               int(len(ste) - ste.sum())]
  assert gb.skipped == {"not in the data": 1}
  assert gb.mean.shape == (2, 12, len(gb.times)) and abs(gb.times[0] + 0.25) < 1e-9
  st = (gb.times > 0.07) & (gb.times < 0.13)
  # Two of the generator's three territories (anterior, lateral) elevate V4: its ST segment
  # averaged over the STE records sits well above the others'.
  v4 = gb.leads.index("V4")
  assert gb.mean[0, v4, st].mean() > gb.mean[1, v4, st].mean() + 0.05
  assert np.all(gb.lo <= gb.mean + 1e-6) and np.all(gb.mean <= gb.hi + 1e-6)
  # A record too short for one beat window is skipped with its reason.
  short = {"signal": np.zeros((12, 100), np.float32), "fs": 250.0,
           "leads": synthetic.SyntheticSource.leads}
  assert group_beats.record_median_beat(short, gb.times, (-0.25, 0.45)) == (
      "shorter than one beat window")


def test_strata_names_and_groups_average_repeats():
  assert group_beats.stratum_names([0.05, 0.15]) == ("p < 0.05", "0.05 <= p < 0.15",
                                                     "p >= 0.15")
  groups, order = group_beats.groups_of(np.array(["a", "a", "b", "c"]),
                                        np.array([0.1, 0.3, 0.15, np.nan]), by="stratum",
                                        label="X", cuts=[0.15])
  # a: mean 0.2 -> upper; b: p == cut goes up; c: never predicted, left out
  assert groups == {"a": "p >= 0.15", "b": "p >= 0.15"} and order == ("p < 0.15", "p >= 0.15")


def test_report_cli_beats_by_stratum(tmp_path):
  y = _truth()
  n = len(y)
  rng = np.random.default_rng(0)
  p = np.clip(0.7 * y + 0.3 * rng.random(y.shape), 0, 1)
  ids = sources.open_source(SPEC).metadata()["record_id"]
  pred = pred_lib.Predictions(ids, ids, np.ones(n, np.int64), np.zeros(n, np.int64),
                              np.zeros(n, np.int64), y, p, synthetic.LABEL_NAMES)
  csv = pred_lib.write_csv(str(tmp_path / "preds.csv"), pred)
  out = tmp_path / "report"
  cmd = [sys.executable, "finetune/report.py", "--predictions", csv, "--bootstrap", "50",
         "--data", SPEC, "--beats-by", "stratum", "--beats_label", "STE",
         "--strata", "STE=0.5", "--report", str(out), "--json"]
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  beats = json.loads(proc.stdout.strip().splitlines()[-1])["beats"]
  high = int((p[:, 1] >= 0.5).sum())
  assert beats["groups"] == {"p < 0.5": n - high, "p >= 0.5": high}
  z = np.load(out / "beats_by_stratum.npz")
  assert z["mean"].shape == (2, 12, len(z["times"])) and (out / "beats_by_stratum.png").exists()
  # Without cut points for the label: one line naming the fix, exit status 2.
  bad = subprocess.run(cmd[:cmd.index("--strata")] + ["--report", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "--strata with cut points for STE" in bad.stderr
  assert "Traceback" not in bad.stderr
