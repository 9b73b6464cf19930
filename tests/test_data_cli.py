"""`python -m ecgjax.data` (formats, inspect, prepare) through real subprocesses."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ecgjax import data

REPO = pathlib.Path(__file__).resolve().parents[1]


def _cli(*args, timeout=300):
  env = dict(os.environ, PYTHONPATH=str(REPO))
  return subprocess.run([sys.executable, "-m", "ecgjax.data", *map(str, args)],
                        cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout)


def _last_json(stdout):
  return json.loads(stdout.strip().splitlines()[-1])


def test_formats_lists_options():
  res = _cli("formats")
  assert res.returncode == 0, res.stderr
  for line in ("prepared:", "synthetic:", "npy:", "seconds= (default 10.0)"):
    assert line in res.stdout


def test_inspect_json_on_synthetic():
  res = _cli("inspect", "synthetic:40?seed=1&seconds=4&fs=500", "--json",
             "--workers", "0")
  assert res.returncode == 0, res.stderr
  s = _last_json(res.stdout)
  assert s["records"] == 40 and s["bad"] == [] and s["bad_count"] == 0
  assert s["sampling_rates"] == {"500": 40}
  assert s["durations_s"] == {"min": 4.0, "median": 4.0, "max": 4.0}
  assert s["leads"] == {",".join(data.LEADS_12): 40}
  meta = data.open_source("synthetic:40?seed=1").metadata()
  assert s["labels"] == dict(zip(data.SYNTHETIC_LABELS,
                                 meta["labels"].sum(0).astype(int).tolist()))
  assert "sampling rates" in res.stdout  # The human summary comes first.


def test_inspect_lists_every_bad_record(tmp_path):
  x = np.random.default_rng(0).standard_normal((6, 12, 500)).astype(np.float32)
  x[1, 3, 7] = np.nan
  x[4, 0, :] = np.inf
  np.save(tmp_path / "sig.npy", x)
  res = _cli("inspect", f"npy:{tmp_path / 'sig.npy'}?fs=100", "--json")
  assert res.returncode == 0, res.stderr
  assert "Traceback" not in res.stderr
  s = _last_json(res.stdout)
  assert s["records"] == 4 and s["sampling_rates"] == {"100": 4}
  assert [b["path"] for b in s["bad"]] == ["sig-1", "sig-4"]
  assert "1 NaN/inf values (rows [3])" in s["bad"][0]["reason"]
  assert "sig-4: signal has 500 NaN/inf" in res.stdout


def test_prepare_with_workers(tmp_path):
  out = tmp_path / "prep"
  spec = "synthetic:150?seed=2&seconds=3"
  res = _cli("prepare", spec, out, "--preset", "st_mem", "--bandpass", "0.5,40",
             "--workers", "2", "--shard_size", "50")
  assert res.returncode == 0, res.stderr
  assert "prepared 150 of 150 records" in res.stdout
  assert not (tmp_path / "prep.tmp").exists()
  meta = json.loads((out / "meta.json").read_text())
  assert meta["counts"]["shards"] == 3 and meta["source"] == spec
  pp = data.Preprocessing.from_dict(meta["preprocessing"])
  assert pp.bandpass == (0.5, 40.0) and pp.fs == 250.0 and pp.samples == 2250
  got, src = data.open_source(str(out)), data.open_source(spec)
  for i in (0, 77, 149):
    np.testing.assert_allclose(got[i]["signal"], pp.prepare(src[i])[0],
                               rtol=2 ** -10, atol=1e-4)
  again = _cli("prepare", spec, out, "--preset", "st_mem")
  assert again.returncode == 2 and "--overwrite" in again.stderr


@pytest.mark.parametrize("args, message", [
    (("inspect", "nope:/x"), "unknown data format 'nope'"),
    (("inspect", "synthetic:3?sed=1"), "unknown option 'sed'"),
    (("inspect", "ptbxl:/no/such/dir"), "/no/such/dir"),
    (("prepare", "synthetic:3", "/tmp/x", "--preset", "nope"), "nope"),
])
def test_errors_exit_2_with_one_line(args, message):
  res = _cli(*args)
  assert res.returncode == 2
  assert message in res.stderr and "Traceback" not in res.stderr
