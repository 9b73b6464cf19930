"""`python -m ecgjax.benchmark` on a tiny PTB-XL release with all ten folds (the standard split)
and on the shared subset's layout (folds 1-8: grouped CV)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from ecgjax.benchmark import run
from ecgjax.data.formats import synthetic
from tests import format_fixtures as ff

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODES = ({"NORM": 100.0, "SR": 0.0}, {"IMI": 50.0, "SR": 0.0}, {"LVH": 100.0, "LVOLT": 0.0})


def _release(root, folds):
  recs = []
  for i in range(60):
    x, _, _ = synthetic.generate_record(11, i, fs=100.0, seconds=10.0)
    recs.append({"ecg_id": i + 1, "patient_id": f"{100 + i}.0", "scp_codes": CODES[i % 3],
                 "fold": i % folds + 1, "signal": x})
  return ff.write_ptbxl(root, recs, seconds=10.0)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  return _release(tmp_path_factory.mktemp("ptbxl") / "ptbxl", 10)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  return run.random_export(str(tmp_path_factory.mktemp("export")))


def test_probes_on_the_standard_split_write_results_and_resume(release, export, tmp_path):
  out = tmp_path / "bench"
  plan = run.Plan(exports=[export], data=f"ptbxl:{release}?fs=100", out=str(out),
                  tasks=("superdiagnostic", "form"), modes=("linear", "attention"),
                  bootstrap=20, attention_epochs=2)
  res = run.run_benchmark(plan)
  (key, entry), = res["models"].items()
  sup, form = entry["tasks"]["superdiagnostic"], entry["tasks"]["form"]
  # superdiagnostic keeps every record with a diagnostic code (all 60), form the 20 with LVOLT
  assert sup["split"] == "standard" and sup["records"] == 60 and form["records"] == 20
  for mode in plan.modes:
    assert sup[mode]["n_records"] == 6  # fold 10
    assert 0.0 <= sup[mode]["macro_auroc"] <= 1.0 and sup[mode]["labels_scored"] == 3
  assert entry["published_as"] is None  # a random encoder is no one's published model
  md = (out / "results.md").read_text()
  assert "Published" not in md and "| superdiagnostic |" in md
  # A pretrained ST-MEM export gets the published numbers beside it.
  pretrained = run.export_lib.load_export(export)
  pretrained.config["training"] = {"data": "npy:corpus", "steps": 100}
  assert run.published_for(pretrained) == "ST-MEM"
  res["models"][key]["published_as"] = "ST-MEM"
  assert "official weights" in run.markdown(res) and "linear 0.896" in run.markdown(res)
  assert json.loads((out / "results.json").read_text())["models"][key]["tasks"]["form"]
  # A rerun finds every cell done: nothing is embedded again.
  emb = out / "runs" / key / "superdiagnostic" / "embeddings.npz"
  os.remove(emb)
  again = run.run_benchmark(plan)
  assert not emb.exists()
  assert again["models"][key]["tasks"]["superdiagnostic"]["linear"] == sup["linear"]


def test_finetune_mode_on_grouped_cv_when_folds_9_and_10_are_missing(export, tmp_path):
  subset = _release(tmp_path / "ptbxl8", 8)  # the shared subset's layout: folds 1-8
  plan = run.Plan(exports=[export], data=f"ptbxl:{subset}?fs=100", out=str(tmp_path / "b"),
                  tasks=("superdiagnostic",), modes=("finetune",), cv_folds=2, bootstrap=20,
                  finetune_epochs=1, finetune_batch_size=16)
  cell = run.run_benchmark(plan)["models"][run.model_key(
      run.export_lib.load_export(export))]["tasks"]["superdiagnostic"]
  assert cell["split"] == "groupcv" and "no folds 9 and 10" in cell["note"]
  assert cell["finetune"]["n_records"] == 60  # grouped CV: every record tested once
  assert np.isfinite(cell["finetune"]["macro_auroc"])


def test_cli_refuses_unknown_tasks_modes_and_data(export, tmp_path):
  proc = subprocess.run([sys.executable, "-m", "ecgjax.benchmark", "--export", export, "--out",
                         str(tmp_path / "b"), "--data", "ptbxl:x", "--tasks", "diagnostics"],
                        cwd=REPO, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "unknown ['diagnostics']" in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr
  for kw, message in (({"modes": ("probe",)}, "unknown ['probe']"),
                      ({"data": "synthetic:10"}, "the benchmark's tasks are PTB-XL's"),
                      ({"data": "ptbxl:x?labels=form"}, "leave labels= out")):
    plan = run.Plan(**{"exports": [export], "data": "ptbxl:x", "out": str(tmp_path), **kw})
    with pytest.raises(run.BenchmarkError, match=re.escape(message)):
      plan.check()
