"""Probes on frozen embeddings: metrics, the logistic probe, embedding and the probe CLI."""

import json
import math
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from ecgjax import eval as eval_lib
from ecgjax.eval import metrics, probes

REPO = pathlib.Path(__file__).resolve().parents[1]
NAMES = ("NORM", "STE", "WQRS", "AF", "LVOLT")


# --- metrics ---------------------------------------------------------------------------------

def test_auroc_auprc_match_hand_computed_values():
  y = np.array([0, 0, 1, 1])
  p = np.array([0.1, 0.4, 0.35, 0.8])
  # 3 of the 4 (positive, negative) pairs are ordered correctly.
  assert metrics.auroc(y, p) == pytest.approx(0.75)
  # Ranked: 0.8 (+) P=1 at R=1/2, 0.4 (-), 0.35 (+) P=2/3 at R=1 -> 1/2 * 1 + 1/2 * 2/3.
  assert metrics.auprc(y, p) == pytest.approx(5 / 6)
  # A tie between a positive and a negative counts one half.
  assert metrics.auroc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)


def test_single_class_gives_nan_and_a_warning():
  with pytest.warns(metrics.SingleClassWarning, match="no positive examples"):
    assert math.isnan(metrics.auroc(np.zeros(5), np.linspace(0, 1, 5)))
  with pytest.warns(metrics.SingleClassWarning, match="no negative examples"):
    assert math.isnan(metrics.auprc(np.ones(5), np.linspace(0, 1, 5)))


def test_summarize_leaves_single_class_labels_out_of_macro_means():
  y = np.array([[0, 1, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]])
  p = np.array([[0.1, 0.9, 0.2], [0.4, 0.1, 0.3], [0.35, 0.8, 0.1], [0.8, 0.3, 0.5]])
  with pytest.warns(metrics.SingleClassWarning, match="'C'"):
    s = metrics.summarize(y, p, ["A", "B", "C"])
  assert s["per_label"]["A"] == {"auroc": pytest.approx(0.75), "auprc": pytest.approx(5 / 6),
                                 "n_pos": 2}
  assert s["per_label"]["B"]["auroc"] == pytest.approx(1.0)
  assert math.isnan(s["per_label"]["C"]["auroc"]) and s["per_label"]["C"]["n_pos"] == 0
  assert s["macro_auroc"] == pytest.approx((0.75 + 1.0) / 2)
  assert s["n_excluded"] == 1 and s["excluded"] == ["C"]
  table = metrics.format_table(s)
  assert "macro" in table and "1 label(s)" in table


# --- probes ----------------------------------------------------------------------------------

def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Features where label j is the sign of feature j (plus noise dims)."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 16))
  y = (x[:, :3] > 0).astype(np.float32)
  x[:, :3] += np.where(y > 0, 1.0, -1.0)  # a margin between the classes
  return x * 5.0 + 3.0, y  # scale/shift: the probe standardises


def test_logreg_probe_on_separable_features_is_near_perfect():
  x_train, y_train = _separable(200, 0)
  x_test, y_test = _separable(100, 1)
  probs = probes.fit_predict_logreg(x_train, y_train, x_test, seed=0)
  assert probs.shape == (100, 3) and probs.dtype == np.float32
  assert np.all((probs >= 0) & (probs <= 1))
  for j in range(3):
    assert metrics.auroc(y_test[:, j], probs[:, j]) > 0.99


def test_logreg_probe_rejects_a_single_class_training_label():
  x, y = _separable(50, 0)
  y[:, 1] = 0
  with pytest.raises(probes.ProbeError, match="label 'b' has no positive examples in --train"):
    probes.fit_predict_logreg(x, y, x, label_names=["a", "b", "c"], split="--train")


def test_evaluate_checks_label_names_and_probe_name():
  x, y = _separable(60, 0)
  d = {"embeddings": x, "labels": y, "label_names": np.array(["a", "b", "c"])}
  s = probes.evaluate(d, d, probe="logreg")
  assert set(s["per_label"]) == {"a", "b", "c"} and s["n_train"] == 60
  other = dict(d, label_names=np.array(["a", "b", "x"]))
  with pytest.raises(probes.ProbeError, match="label names differ"):
    probes.evaluate(d, other)
  with pytest.raises(probes.ProbeError, match="unknown probe 'svm'; known: logreg"):
    probes.evaluate(d, d, probe="svm")


def test_embeddings_npz_round_trip(tmp_path):
  d = {"embeddings": np.ones((3, 4), np.float32), "record_id": ["r0", "r1", "r2"],
       "patient_id": ["p0", "p0", "p1"], "fold": np.array([1, 2, 3]),
       "labels": np.zeros((3, 2), np.float32), "label_names": ["x", "y"]}
  path = eval_lib.save_embeddings(str(tmp_path / "emb"), d)
  assert path.endswith("emb.npz")
  with np.load(path, allow_pickle=False) as f:
    assert sorted(f.files) == sorted(eval_lib.EMBEDDING_KEYS)
  back = eval_lib.load_embeddings(path)
  assert back["record_id"].tolist() == ["r0", "r1", "r2"]
  assert back["label_names"].tolist() == ["x", "y"]
  np.testing.assert_array_equal(back["embeddings"], d["embeddings"])
  np.savez(tmp_path / "bad.npz", embeddings=np.ones((2, 2)))
  with pytest.raises(ValueError, match="missing keys"):
    eval_lib.load_embeddings(str(tmp_path / "bad.npz"))


# --- embedding with an export ----------------------------------------------------------------

def _save_mu_export(directory, leads=None) -> str:
  from ecgjax import models
  from ecgjax.data import transforms
  from ecgjax import export as export_lib
  module = models.build_model("st_mem_encoder", "mu")
  # jit: an un-jitted init dispatches op by op and takes seconds.
  params = jax.jit(module.init)(jax.random.PRNGKey(0),
                                np.zeros((1, 12, 2250), np.float32))["params"]
  contract = transforms.Preprocessing(
      fs=250, samples=2250, leads=leads or transforms.leads_lib.LEADS_12,
      bandpass=(0.67, 40.0), standardize="global")
  desc = {"model": "st_mem", "variant": "mu", "module": "st_mem_encoder", "overrides": {},
          "embedding": {"dim": 64, "pooling": "mean_patch_tokens_then_norm"}}
  return export_lib.save_export(str(directory), params, desc, contract.to_dict())


@pytest.fixture(scope="module")
def mu_export(tmp_path_factory):
  """A random-init mu ST-MEM encoder exported like pretraining exports it."""
  from ecgjax import export as export_lib
  return export_lib.load_export(_save_mu_export(tmp_path_factory.mktemp("run") / "export"))


def _direct(export, x, **kwargs) -> np.ndarray:
  return np.asarray(export.module.apply({"params": export.params}, x, **kwargs)[0])


def test_embed_source_carries_ids_labels_and_ignores_padding(mu_export):
  from ecgjax import data
  source = data.open_source("synthetic:20?seed=1")
  d = eval_lib.embed_source(mu_export, source, batch_size=8, progress=False)  # 8+8+4 (+4 pad)
  assert sorted(d) == sorted(eval_lib.EMBEDDING_KEYS)
  assert d["embeddings"].shape == (20, 64) and d["embeddings"].dtype == np.float32
  assert np.all(np.isfinite(d["embeddings"]))
  meta = source.metadata()
  assert d["record_id"].tolist() == meta["record_id"].tolist()
  assert d["patient_id"].tolist() == meta["patient_id"].tolist()
  np.testing.assert_array_equal(d["fold"], meta["fold"])
  np.testing.assert_array_equal(d["labels"], meta["labels"])
  assert tuple(d["label_names"]) == NAMES
  # The padded last batch gives what the encoder gives those records on their own.
  x = np.stack([data.Preprocessing.of(mu_export.contract)(source[i]) for i in range(16, 20)])
  np.testing.assert_allclose(d["embeddings"][16:], _direct(mu_export, x), atol=1e-5)
  assert not np.allclose(d["embeddings"][0], d["embeddings"][1])


def test_embed_source_averages_crop_embeddings(mu_export):
  from ecgjax import data
  source = data.open_source("synthetic:3?seed=4")  # 10 s at 250 Hz: 2500 samples
  d = eval_lib.embed_source(mu_export, source, n_crops=3, progress=False)
  crops = data.Preprocessing.of(mu_export.contract).crops(source[1], 3)  # starts 0, 125, 250
  assert crops.shape == (3, 12, 2250)
  np.testing.assert_allclose(d["embeddings"][1], _direct(mu_export, crops).mean(0), atol=1e-5)


def test_embed_source_passes_lead_indices_for_a_lead_subset(tmp_path):
  from ecgjax import data
  from ecgjax import export as export_lib
  export = export_lib.load_export(_save_mu_export(tmp_path / "export", leads=("I", "V2")))
  source = data.open_source("synthetic:2?seed=5")
  d = eval_lib.embed_source(export, source, progress=False)
  x = np.stack([data.Preprocessing.of(export.contract)(source[i]) for i in range(2)])
  assert x.shape == (2, 2, 2250)
  # V2 must keep V2's lead embedding (index 7), not lead II's (index 1).
  np.testing.assert_allclose(d["embeddings"], _direct(export, x, lead_idx=np.array([0, 7])),
                             atol=1e-5)
  assert not np.allclose(d["embeddings"], _direct(export, x), atol=1e-3)


# --- the command-line scripts ----------------------------------------------------------------

def _run(script: str, *args: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
  return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True,
                        text=True, env=env, cwd=REPO, timeout=300)


@pytest.fixture(scope="module")
def export_dir(mu_export) -> str:
  return mu_export.directory


def test_probe_cli_prints_a_table_and_json_last(export_dir):
  proc = _run("finetune/probe.py", "--export", export_dir, "--train", "synthetic:60?seed=2",
              "--test", "synthetic:30?seed=3", "--probe", "logreg", "--json",
              "--batch_size", "16")
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.strip().splitlines()
  assert "macro" in proc.stdout and "AUROC" in proc.stdout
  out = json.loads(lines[-1])
  assert set(out) >= {"macro_auroc", "macro_auprc", "per_label", "n_train", "n_test",
                      "export", "probe"}
  assert (out["n_train"], out["n_test"], out["probe"]) == (60, 30, "logreg")
  assert out["export"] == export_dir
  assert list(out["per_label"]) == list(NAMES)
  assert [v["n_pos"] for v in out["per_label"].values()] == [17, 5, 6, 3, 2]
  for v in out["per_label"].values():  # random encoder: any value, but a valid one
    assert 0.0 <= v["auroc"] <= 1.0 and 0.0 <= v["auprc"] <= 1.0
  assert 0.0 <= out["macro_auroc"] <= 1.0


def test_probe_cli_errors_are_one_clear_line(export_dir, tmp_path):
  proc = _run("finetune/probe.py", "--export", str(tmp_path), "--train", "synthetic:8",
              "--test", "synthetic:8")
  assert proc.returncode != 0
  assert "is not an ecgjax export: config.json not found" in proc.stderr
  assert "Traceback" not in proc.stderr
  # Three training records cannot hold every synthetic label.
  proc = _run("finetune/probe.py", "--export", export_dir, "--train", "synthetic:3?seed=0",
              "--test", "synthetic:8")
  assert proc.returncode != 0
  assert "examples in --train" in proc.stderr and "Traceback" not in proc.stderr


def test_embed_cli_writes_the_embeddings_file(export_dir, tmp_path):
  out = tmp_path / "emb.npz"
  proc = _run("finetune/embed.py", "--export", export_dir, "--data", "synthetic:5?seed=6",
              "--out", str(out), "--n_crops", "2")
  assert proc.returncode == 0, proc.stderr[-3000:]
  d = eval_lib.load_embeddings(str(out))
  assert d["embeddings"].shape == (5, 64) and tuple(d["label_names"]) == NAMES


def test_default_n_crops_follows_the_model_and_the_record_length(mu_export):
  from ecgjax import data
  assert eval_lib.default_n_crops(mu_export, data.open_source("synthetic:4")) == 3
  assert eval_lib.default_n_crops(mu_export, data.open_source("synthetic:4?seconds=9")) == 1
  # ECG-FM scores a longer record as two segments; other models as one crop.
  for model, n in (("ecg_fm", 2), ("net1d", 1)):
    other = type(mu_export)(mu_export.directory, dict(mu_export.config, model=model),
                            mu_export.params)
    assert eval_lib.default_n_crops(other, data.open_source("synthetic:4")) == n


def test_check_export_names_an_incompatible_model(mu_export):
  eval_lib.check_export(mu_export)
  wrong = type(mu_export)(mu_export.directory, dict(mu_export.config, variant="S/75"),
                          mu_export.params)
  with pytest.raises(ValueError, match=r"incompatible with the model its config names "
                                       r"\(st_mem S/75.*with another shape"):
    eval_lib.check_export(wrong)
  unknown = type(mu_export)(mu_export.directory, dict(
      mu_export.config, encoder={"module": "resnet9000", "overrides": {}}), mu_export.params)
  with pytest.raises(ValueError, match="cannot build: unknown model 'resnet9000'"):
    eval_lib.check_export(unknown)
