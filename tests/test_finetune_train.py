"""The fine-tuning trainer end to end on separable synthetic labels; resume; probe; layer decay."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import data, objectives
from ecgjax.data import sources
from ecgjax.eval import predictions as pred_lib
from ecgjax.objectives import classifier as model_lib
from ecgjax.objectives import supervised as objective_lib
from ecgjax.finetune import trainer
from ecgjax import tree

# One device: the trainer's multi-device path runs in test_entrypoints; here compile time rules.
DEVICES = jax.devices()[:1]


class SeparableSource(sources.Source):
  """12-lead 100 Hz records; FAST: 15 Hz (not 5 Hz) in the limb leads; CHEST: a tone in V1-V6."""

  label_names = ("FAST", "CHEST")
  fs = 100.0

  def __init__(self, n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    self.n = n
    self.labels = (rng.random((n, 2)) < 0.5).astype(np.float32)
    self.phase = rng.uniform(0, 2 * np.pi, n)
    self.patient = np.array([f"p{i // 2}" for i in range(n)])  # two records per patient
    self.fold = np.array([(i // 2) % 6 + 1 for i in range(n)])
    self.seed = seed

  def __len__(self):
    return self.n

  def __getitem__(self, i):
    i = self._check_index(i)
    rng = np.random.default_rng([self.seed, i])
    t = np.arange(1000) / self.fs
    x = 0.3 * rng.standard_normal((12, 1000))
    f = 15.0 if self.labels[i, 0] else 5.0
    x[:6] += np.sin(2 * np.pi * f * t + self.phase[i])
    if self.labels[i, 1]:
      x[6:] += np.sin(2 * np.pi * 8.0 * t + self.phase[i])
    return sources.make_record(x.astype(np.float32), self.fs, data.LEADS_12, f"r{i}",
                               patient_id=self.patient[i], fold=int(self.fold[i]),
                               labels=self.labels[i])

  def metadata(self):
    return {"record_id": np.array([f"r{i}" for i in range(self.n)]),
            "patient_id": self.patient, "fold": self.fold.astype(np.int64),
            "labels": self.labels}


def _config(**overrides):
  from configs import finetune as ft_config
  c = ft_config.get_config("backbone=net1d,fs=100,runlocal")
  c.split, c.test_folds, c.val_folds = "folds", "6", "5"  # one split: one compilation
  c.epochs, c.batch_size, c.base_lr = 4, 16, 0.05
  c.input.samples = 500  # 5 s crops of the 10 s records
  c.bootstrap, c.log_every_steps = 50, 4
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


@pytest.fixture(scope="module", autouse=True)
def compilation_cache(tmp_path_factory):
  """The trainer runs here compile identical steps: a persistent cache compiles them once."""
  keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
          "jax_persistent_cache_min_entry_size_bytes")
  old = {k: getattr(jax.config, k) for k in keys}
  jax.config.update(keys[0], str(tmp_path_factory.mktemp("jax_cache")))
  jax.config.update(keys[1], 0.0)
  jax.config.update(keys[2], 0)
  yield
  for k, v in old.items():
    jax.config.update(k, v)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("ft"))
  out = trainer.finetune(_config(), workdir, source=SeparableSource(), devices=DEVICES)
  return workdir, out


def test_short_finetune_on_separable_labels_reaches_high_auroc(finished):
  workdir, out = finished
  assert out["macro_auroc"] > 0.95, out["test"]["per_label"]
  lo, hi = out["macro_auroc_ci"]
  assert lo <= out["macro_auroc"] <= hi
  pred = pred_lib.read_csv(os.path.join(workdir, "predictions.csv"))
  assert pred.label_names == ("FAST", "CHEST") and set(pred.fold.tolist()) == {6}
  # The selected model's validation predictions (fold 5) set the operating thresholds.
  val = pred_lib.read_csv(os.path.join(workdir, trainer.VALIDATION_FILE))
  assert set(val.fold.tolist()) == {5} and out["test"]["threshold_source"] == "validation"
  assert out["test"]["bootstrap"]["unit"] == "patient"  # two records per patient
  history = [json.loads(l) for l in open(os.path.join(workdir, "split0", "validation.jsonl"))]
  assert [h["epoch"] for h in history] == [1, 2, 3, 4]
  # The test fold was predicted with the state of the best VALIDATION epoch.
  best = max(history, key=lambda h: h["score"])
  assert out["best_epochs"] == [best["epoch"]]
  # Augmentation strength alpha(e) falls from 1 over the run's passes through the data.
  alphas = [h["alpha"] for h in history]
  assert alphas[0] == 1.0 and alphas == sorted(alphas, reverse=True) and alphas[-1] < 0.5
  steps = [json.loads(l) for l in open(os.path.join(workdir, "split0", "metrics.jsonl"))]
  assert all(np.isfinite(s["loss"]) for s in steps) and "loss_FAST" in steps[0]


def test_interrupted_run_resumes_to_the_same_predictions(finished, tmp_path):
  workdir, _ = finished
  again = str(tmp_path / "resumed")
  assert trainer.finetune(_config(), again, source=SeparableSource(), devices=DEVICES,
                          stop_after_steps=4) is None
  assert os.listdir(os.path.join(again, "split0", "checkpoints"))
  out = trainer.finetune(_config(), again, source=SeparableSource(), devices=DEVICES)
  a = pred_lib.read_csv(os.path.join(workdir, "predictions.csv"))
  b = pred_lib.read_csv(os.path.join(again, "predictions.csv"))
  np.testing.assert_allclose(b.p, a.p, atol=2e-5)
  # A finished split is read back, not retrained.
  assert trainer.finetune(_config(), again, source=SeparableSource(),
                          devices=DEVICES)["macro_auroc"] == out["macro_auroc"]


def test_external_set_gets_the_fold_ensemble(tmp_path):
  out = trainer.finetune(_config(), str(tmp_path), source=SeparableSource(),
                         external=SeparableSource(n=24, seed=7), devices=DEVICES)
  ext = pred_lib.read_csv(str(tmp_path / trainer.EXTERNAL_FILE))
  assert len(ext.record_id) == 24 and set(ext.cv_fold.tolist()) == {-1}
  assert out["external"]["macro_auroc"] > 0.95
  # The ensemble is the mean probability of the splits' models.
  a = trainer.evaluate.to_predictions({"record_id": np.array(["x", "y"]),
                                       "patient_id": np.array(["x", "y"]),
                                       "fold": np.array([1, 1]), "labels": np.eye(2),
                                       "p": np.array([[0.2, 0.4], [0.6, 0.8]])}, ("A", "B"), 0)
  b = trainer.evaluate.to_predictions({"record_id": np.array(["x", "y"]),
                                       "patient_id": np.array(["x", "y"]),
                                       "fold": np.array([1, 1]), "labels": np.eye(2),
                                       "p": np.array([[0.4, 0.0], [0.2, 0.8]])}, ("A", "B"), 1)
  np.testing.assert_allclose(trainer.ensemble([a, b]).p, [[0.3, 0.2], [0.4, 0.8]])


def _objective(mode, **kw):
  backbone = model_lib.build_backbone("resnet1d", "mu", 2)
  return objective_lib.Supervised(backbone, ("A", "B"), mode=mode, **kw)


def test_linear_probe_trains_only_the_head_and_keeps_bn_statistics():
  from ecgjax.train import mesh as mesh_lib
  from ecgjax.train import step as step_lib
  c = _config(mode="linear_probe", batch_size=8, base_lr=1.0)
  obj = _objective("linear_probe")
  batch = {"signal": np.random.default_rng(0).normal(size=(8, 12, 128)).astype(np.float32),
           "labels": np.ones((8, 2), np.float32)}
  c.total_steps, c.warmup_steps = 4, 0
  training = step_lib.build_training(c, obj, mesh_lib.make_mesh(), batch)
  assert 0 < training.params[1] < training.params[0]
  state = training.init()
  before = jax.device_get(state)
  state, _ = training.train_step(state, mesh_lib.to_global(batch, mesh_lib.make_mesh()))
  after = jax.device_get(state)
  changed = {p for p, v in tree.flatten(after["params"]).items()
             if not np.array_equal(v, tree.flatten(before["params"])[p])}
  assert changed == {"backbone/body/head/bias", "backbone/body/head/kernel"}
  jax.tree.map(np.testing.assert_array_equal, after["collections"], before["collections"])


def test_uncertainty_weighting_and_pcgrad_wire_into_the_objective():
  obj = _objective("full", weighting_name="uncertainty", pcgrad_variant="reference")
  assert obj.grad_combiner is not None
  x = np.random.default_rng(0).normal(size=(4, 12, 128)).astype(np.float32)
  params, coll = jax.jit(obj.init)(jax.random.PRNGKey(0), {"signal": x})
  np.testing.assert_array_equal(params["log_vars"], [0.0, 0.0])
  batch = {"signal": x, "labels": np.array([[1, 0], [0, 1], [1, 1], [0, 0]], np.float32)}
  loss_fn = lambda p: obj.loss(p, coll, batch, jax.random.PRNGKey(1), 0)
  (loss, aux), g = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
  assert list(aux.tasks) == ["000_A", "001_B"]  # label order: PCGrad's fixed order
  np.testing.assert_allclose(loss, aux.tasks["000_A"] + aux.tasks["001_B"], rtol=1e-6)
  # s_t = 0: each task term is its raw loss; the log-variance gradient is 1 - L_t.
  np.testing.assert_allclose([aux.tasks["000_A"], aux.tasks["001_B"]],
                             [aux.terms["loss_A"], aux.terms["loss_B"]], rtol=1e-6)
  np.testing.assert_allclose(g["log_vars"], 1 - np.array([aux.terms["loss_A"],
                                                           aux.terms["loss_B"]]), rtol=1e-5)


def test_layer_decay_scales_transformer_layers():
  params = {"backbone": {"patch_embed": {"kernel": jnp.ones(2)},
                         "block_0": {"qkv": {"kernel": jnp.ones(2)}},
                         "block_1": {"qkv": {"kernel": jnp.ones(2)}},
                         "norm": {"scale": jnp.ones(2)}},
            "head": {"kernel": jnp.ones(2)}}
  scales = tree.flatten(model_lib.layer_decay_scales(params, 0.5))
  assert scales == {"backbone/patch_embed/kernel": 0.125, "backbone/block_0/qkv/kernel": 0.25,
                    "backbone/block_1/qkv/kernel": 0.5, "backbone/norm/scale": 1.0,
                    "head/kernel": 1.0}


def test_export_backbone_gets_a_new_head_and_pretrained_weights(tmp_path):
  from ecgjax import models
  from ecgjax import export as export_lib
  enc = models.build_model("st_mem_encoder", "mu", seq_len=300, patch_size=75)
  x = jnp.zeros((1, 12, 300))
  p = jax.jit(enc.init)(jax.random.PRNGKey(3), x)["params"]
  pp = data.Preprocessing(fs=100.0, samples=300)
  export_lib.save_export(str(tmp_path / "export"), p,
                         {"model": "st_mem", "variant": "mu", "module": "st_mem_encoder",
                          "overrides": {"seq_len": 300, "patch_size": 75},
                          "embedding": {"dim": 64, "pooling": "mean"}}, pp.to_dict())
  exp = export_lib.load_export(str(tmp_path / "export"))
  backbone = model_lib.backbone_from_export(exp)
  obj = objective_lib.Supervised(backbone, ("A", "B", "C"), mode="full")
  params, _ = jax.jit(obj.init)(jax.random.PRNGKey(0),
                                {"signal": np.zeros((2, 12, 300), np.float32)})
  assert params["head"]["kernel"].shape == (64, 3)
  jax.tree.map(np.testing.assert_array_equal, params["backbone"], exp.params)
  # The fine-tuned transformer classifier explains like any model (finetune/explain.py --run
  # hands these to ecgjax.explain): attention rollout through the head to leads x patches.
  from ecgjax import explain
  v = {"params": {k: val for k, val in params.items() if k != "log_vars"}}
  xs = np.random.default_rng(0).normal(size=(2, 12, 300)).astype(np.float32)
  ro = explain.attention_rollout(obj.model, v, xs)
  assert ro.tokens.shape == (2, 12, 4) and ro.layers == enc.depth
  g = explain.gradient_x_input(obj.model, v, xs, 1)
  assert g.shape == xs.shape and np.abs(g).sum() > 0
  scratch = objective_lib.Supervised(backbone, ("A",), mode="scratch")
  params, _ = jax.jit(scratch.init)(jax.random.PRNGKey(0),
                                    {"signal": np.zeros((2, 12, 300), np.float32)})
  assert not np.allclose(params["backbone"]["patch_embed"]["kernel"],
                         exp.params["patch_embed"]["kernel"])


@pytest.mark.parametrize("model", ["resnet1d", "resnet2d"])
def test_registry_builds_the_supervised_objective(model):
  c = _config(labels="A,B")
  c.model, c.variant = model, "mu"  # ResNet2D (EIANet) sees (leads, T) as a 1-channel image
  obj = objectives.build(c)
  x = np.zeros((2, 12, 64), np.float32)
  params, coll = jax.jit(obj.init)(jax.random.PRNGKey(0), {"signal": x})
  p = jax.jit(obj.predict)(params, coll, x)
  assert p.shape == (2, 2) and float(p.min()) > 0 and float(p.max()) < 1
