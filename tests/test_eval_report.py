"""Reports (JSON, Markdown, PNGs), prediction tables and the probe/report command lines."""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from ecgjax import eval as eval_lib
from ecgjax.eval import experiment, protocols, report
from ecgjax.eval import predictions as pred_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("A", "B", "C")


def _dataset(n: int = 160, seed: int = 0) -> dict[str, np.ndarray]:
  """An embeddings dict: 3 labels carried by features 0-2, 2 records per patient, folds 1-8."""
  rng = np.random.default_rng(seed)
  y = (rng.random((n, 3)) < [0.5, 0.3, 0.25]).astype(np.float32)
  x = rng.normal(size=(n, 12))
  x[:, :3] += 1.5 * (2 * y - 1)
  return {"embeddings": x.astype(np.float32),
          "record_id": np.array([f"r{i:03d}" for i in range(n)]),
          "patient_id": np.array([f"p{i // 2:03d}" for i in range(n)]),
          "fold": (np.arange(n) // 2) % 8 + 1, "labels": y, "label_names": np.array(NAMES)}


def _run(script: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
  """Two embedding files of the same records (fusable), and three broken ones."""
  d = tmp_path_factory.mktemp("emb")
  a = _dataset()
  b = dict(a, embeddings=np.random.default_rng(9).normal(size=(160, 5)).astype(np.float32))
  order = np.random.default_rng(1).permutation(160)  # fusion must match ids, not rows
  b = {k: (v[order] if k != "label_names" else v) for k, v in b.items()}
  out = {"a": eval_lib.save_embeddings(str(d / "a.npz"), a),
         "b": eval_lib.save_embeddings(str(d / "b.npz"), b)}
  unlabelled = dict(a, labels=np.zeros((160, 0), np.float32), label_names=np.array([], str))
  out["unlabelled"] = eval_lib.save_embeddings(str(d / "unlabelled.npz"), unlabelled)
  short = {k: (v[:150] if k != "label_names" else v) for k, v in a.items()}
  out["short"] = eval_lib.save_embeddings(str(d / "short.npz"), short)
  rare = dict(a, labels=a["labels"].copy())
  rare["labels"][:, 2] = 0
  rare["labels"][a["fold"] == 8, 2] = 1  # C only in the test fold
  out["rare"] = eval_lib.save_embeddings(str(d / "rare.npz"), rare)
  return out


def _predictions(d: dict[str, np.ndarray], n_repeats: int = 2, n_folds: int = 3
                 ) -> pred_lib.Predictions:
  """Scores that follow the labels (no probe needed), as a repeated K-fold table."""
  n = len(d["record_id"])
  rng = np.random.default_rng(5)
  parts = []
  for r in range(n_repeats):
    p = 1 / (1 + np.exp(-(2.5 * (d["labels"] - 0.5) + rng.normal(size=d["labels"].shape))))
    parts.append(pred_lib.Predictions(
        d["record_id"], d["patient_id"], d["fold"], np.full(n, r), rng.permutation(n) % n_folds,
        d["labels"], p, NAMES))
  return pred_lib.concat(parts)


def test_report_writes_json_markdown_and_clear_pngs(tmp_path):
  d = _dataset()
  table = experiment.Table(d["record_id"], d["patient_id"], d["fold"], d["labels"], NAMES)
  splits = protocols.make_splits("groupcv", d["labels"], d["patient_id"], n_folds=2)
  r = report.build(_predictions(d), n_bootstrap=200,
                   meta={"protocol": "groupcv", "probe": "logreg", "sources": ["a.npz"]})
  r["label_efficiency"] = experiment.label_efficiency(table, [d["embeddings"]], splits,
                                                      [30, None])
  paths = report.write(r, str(tmp_path), embeddings={"a.npz": d["embeddings"]},
                       tsne_labels=d["labels"], tsne_max=120)
  names = sorted(os.path.basename(p) for p in paths)
  assert names == sorted(["report.json", "report.md", "roc_pr.png", "calibration.png",
                          "decision_curve.png", "label_efficiency.png", "tsne.png"])
  out = json.loads((tmp_path / "report.json").read_text())
  assert set(out) >= {"macro_auroc", "macro_auroc_ci", "per_label", "protocol", "curves",
                      "label_efficiency", "per_fold", "bootstrap", "threshold_rule"}
  assert set(out["per_label"]["A"]) >= {"auroc", "auroc_ci", "auprc", "auprc_ci", "n_pos",
                                        "sensitivity", "specificity", "precision", "f1",
                                        "brier", "threshold"}
  assert out["per_label"]["A"]["auroc"] > 0.8
  md = (tmp_path / "report.md").read_text()
  assert "| label | pos / n | AUROC (95% CI) |" in md and "| **macro** |" in md
  assert "![Label efficiency](label_efficiency.png)" in md
  from matplotlib import image
  for p in paths:
    if p.endswith(".png"):
      img = image.imread(p)
      assert os.path.getsize(p) > 20_000 and min(img.shape[:2]) > 300
      assert img[..., :3].std() > 0.05  # drawn on, not a blank canvas


def test_predictions_csv_round_trip_and_errors(tmp_path):
  pred = pred_lib.Predictions(
      np.array(["a", "b", "c"]), np.array(["p", "p", "q"]), np.array([1, 2, 3]),
      np.array([0, 0, 1]), np.array([0, 1, 0]), np.array([[1, 0], [0, 1], [1, 1]], np.float32),
      np.array([[0.25, np.nan], [0.5, 0.125], [1.0, 0.0]]), ("x", "y"))
  path = pred_lib.write_csv(str(tmp_path / "p.csv"), pred)
  back = pred_lib.read_csv(path)
  for k in ("record_id", "patient_id", "fold", "repeat", "cv_fold", "y"):
    np.testing.assert_array_equal(getattr(back, k), getattr(pred, k))
  np.testing.assert_array_equal(back.p, pred.p)  # NaN stays NaN (an empty cell)
  assert back.label_names == ("x", "y")
  bad = tmp_path / "bad.csv"
  bad.write_text("record_id,fold,y_x,p_x\na,1,1,0.5\n")
  with pytest.raises(pred_lib.PredictionsError, match=r"lacks required column\(s\) \['patient_id'\]"):
    pred_lib.read_csv(str(bad))
  bad.write_text("record_id,patient_id,fold,y_x,p_x\na,p,1,1,high\n")
  with pytest.raises(pred_lib.PredictionsError, match="row 2: column 'p_x' holds 'high'"):
    pred_lib.read_csv(str(bad))


def test_report_cli_round_trip_on_a_predictions_csv(tmp_path):
  pred = _predictions(_dataset(120, 3))
  csv_path = pred_lib.write_csv(str(tmp_path / "pred.csv"), pred)
  proc = _run("finetune/report.py", "--predictions", csv_path, "--report",
              str(tmp_path / "rep"), "--bootstrap", "300", "--threshold", "sens=0.9", "--json")
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  expect = report.build(pred_lib.read_csv(csv_path), n_bootstrap=300, threshold="sens=0.9")
  assert out["macro_auroc"] == pytest.approx(expect["macro_auroc"])
  assert out["macro_auroc_ci"] == pytest.approx(expect["macro_auroc_ci"])
  assert len(out["macro_auroc_repeats"]) == 2 and out["macro_auroc_std"] is not None
  assert all(v["sensitivity"] >= 0.9 for v in out["per_label"].values())
  assert "curves" not in out
  assert (tmp_path / "rep" / "report.md").exists() and (tmp_path / "rep" / "roc_pr.png").exists()
  proc = _run("finetune/report.py", "--predictions", str(tmp_path / "none.csv"))
  assert proc.returncode == 2 and "no such predictions file" in proc.stderr
  assert "Traceback" not in proc.stderr


def test_probe_cli_fuses_files_over_reshuffles(files, tmp_path):
  proc = _run("finetune/probe.py", "--embeddings", files["a"], "--embeddings", files["b"],
              "--protocol", "reshuffle", "--repeats", "3", "--probe", "logreg",
              "--bootstrap", "200", "--predictions_out", str(tmp_path / "pred.csv"), "--json")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "macro" in proc.stdout and "AUROC" in proc.stdout
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["protocol"] == "reshuffle" and out["sources"] == [files["a"], files["b"]]
  assert len(out["macro_auroc_repeats"]) == 3
  assert out["macro_auroc_mean"] == pytest.approx(np.mean(out["macro_auroc_repeats"]))
  assert out["macro_auroc_std"] > 0 and out["macro_auroc"] > 0.8
  lo, hi = out["per_label"]["A"]["auroc_ci"]
  assert lo <= out["per_label"]["A"]["auroc"] <= hi
  pred = pred_lib.read_csv(str(tmp_path / "pred.csv"))
  assert len(pred.repeats) == 3 and pred.label_names == NAMES


def test_probe_cli_split_folds_with_label_efficiency(files, tmp_path):
  proc = _run("finetune/probe.py", "--embeddings", files["a"], "--split_folds", "8",
              "--train_sizes", "20,all", "--seeds", "0,1", "--labels", "A",
              "--bootstrap", "100", "--report", str(tmp_path / "rep"), "--tsne_max", "100",
              "--json")
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["protocol"] == "split" and list(out["per_label"]) == ["A"]  # a binary task
  assert out["n_test"] == 20 and out["n_train"] == 140
  sizes = [p["train_size"] for p in out["label_efficiency"]]
  assert sizes == [20, "all"] and all(p["n_runs"] == 2 for p in out["label_efficiency"])
  assert (tmp_path / "rep" / "tsne.png").exists()
  assert (tmp_path / "rep" / "label_efficiency.png").exists()


@pytest.mark.parametrize("args, message", [
    (["--embeddings", "{unlabelled}"], r"holds no labels \(label_names is empty\)"),
    (["--embeddings", "{a}", "--embeddings", "{short}"],
     "record ids do not match: .*short.npz lacks 10 of the 160 records"),
    (["--embeddings", "{rare}", "--split_folds", "8"],
     "label 'C' has no positive examples in the training folds"),
    (["--embeddings", "{a}", "--protocol", "split"], "--protocol split needs a split"),
])
def test_probe_cli_bad_input_is_one_clear_line(files, args, message):
  proc = _run("finetune/probe.py", *[a.format(**files) for a in args])
  assert proc.returncode == 2, proc.stdout[-2000:]
  assert "Traceback" not in proc.stderr
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("probe.py: error:")
  assert re.search(message, last), last
