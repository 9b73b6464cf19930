"""What the references' recipes do, pinned: the wav2vec 2.0 loss against a hand computation,
code_perplexity from the argmax codes, weight decay on matrices vs every parameter (and never on
frozen tables), ECG-FM's fine-tune (CNN frozen, sum / nonzero-count pooling) and ST-MEM's
fine-tune RandAugment through configs/finetune.py."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ecgjax import data, models
from ecgjax.objectives import classifier as model_lib
from ecgjax.objectives import supervised as objective_lib
from ecgjax.finetune import trainer
from ecgjax.objectives import wav2vec2
from ecgjax import export as export_lib
from ecgjax.train import optim
from ecgjax import tree


def _np_cos(a, b):
  a = a / np.linalg.norm(a, axis=-1, keepdims=True)
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  return a @ b.T


def _np_ppl(p, w):
  avg = (p * w[:, None, None]).sum(0) / w.sum()  # (G, V)
  return np.exp(-(avg * np.log(avg + 1e-7)).sum(-1)).sum()


def test_wav2vec2_loss_against_a_hand_computation():
  rng = np.random.default_rng(0)
  t, f, g, v, n = 5, 4, 2, 3, 2
  preds = rng.normal(size=(1, t, f)).astype(np.float32)
  targets = rng.normal(size=(1, t, f)).astype(np.float32)
  code_logits = rng.normal(size=(1, t, g, v)).astype(np.float32)
  # Training codes (Gumbel-picked) deliberately differ from the argmax codes.
  codes = np.array([[[0, 1], [2, 2], [0, 1], [1, 0], [2, 2]]], np.int32)
  features = rng.normal(size=(1, t, 3)).astype(np.float32)
  mask = np.array([[True, True, False, True, True]])
  # Frame 0's negative 1 (frame 2) has frame 0's code: its logit must be -inf.
  negs = np.array([[[1, 2], [0, 3], [0, 1], [4, 1], [0, 3]]], np.int32)
  loss, terms, metrics = wav2vec2.wav2vec2_terms(
      jnp.asarray(preds), jnp.asarray(targets), jnp.asarray(codes), jnp.asarray(code_logits),
      jnp.asarray(features), jnp.asarray(mask), jnp.asarray(negs), logit_temp=0.1,
      diversity_weight=0.1, feature_pen_weight=10.0)

  sim = _np_cos(preds[0].astype(np.float64), targets[0].astype(np.float64))
  nll = []
  for i in np.flatnonzero(mask[0]):
    logits = [sim[i, i] / 0.1]
    for j in negs[0, i]:
      same = np.array_equal(codes[0, j], codes[0, i])
      logits.append(-np.inf if same else sim[i, j] / 0.1)
    logits = np.array(logits)
    nll.append(-(logits[0] - np.log(np.exp(logits - logits.max()).sum()) - logits.max()))
  want_ce = np.mean(nll)
  w = mask[0].astype(np.float64)
  soft = np.exp(code_logits[0]) / np.exp(code_logits[0]).sum(-1, keepdims=True)
  want_div = (g * v - _np_ppl(soft, w)) / (g * v)
  want_pen = np.mean(features.astype(np.float64) ** 2)
  np.testing.assert_allclose(terms["wav2vec2"], want_ce, rtol=1e-5)
  np.testing.assert_allclose(terms["diversity"], want_div, rtol=1e-5)
  np.testing.assert_allclose(terms["feature_pen"], want_pen, rtol=1e-6)
  np.testing.assert_allclose(loss, want_ce + 0.1 * want_div + 10 * want_pen, rtol=1e-5)
  # code_perplexity as fairseq logs it: the argmax of the logits (no Gumbel), masked frames.
  hard = np.eye(v)[code_logits[0].argmax(-1)]
  np.testing.assert_allclose(metrics["code_perplexity"], _np_ppl(hard, w), rtol=1e-5)
  from_training_codes = _np_ppl(np.eye(v)[codes[0]], w)
  assert abs(float(metrics["code_perplexity"]) - from_training_codes) > 1e-3


def _opt_config(scope: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.optimizer, c.base_lr, c.batch_size = "adamw", 0.5, 256
  c.warmup_steps, c.total_steps, c.min_lr_ratio = 0, 10, 1.0
  c.grad_clip_norm, c.b1, c.b2, c.adam_eps = 0.0, 0.9, 0.999, 1e-8
  c.weight_decay, c.weight_decay_scope = 0.1, scope
  return c


@pytest.mark.parametrize("scope,decayed", [
    ("matrices", {"dense/kernel"}),
    ("all", {"dense/kernel", "dense/bias", "norm/scale", "sep"})])
def test_weight_decay_on_matrices_or_every_parameter_never_frozen(scope, decayed):
  params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)},
            "norm": {"scale": jnp.ones(2)}, "sep": jnp.ones(4),
            "pos_table": jnp.ones((4, 2))}
  tx, _ = optim.make_optimizer(_opt_config(scope), params, frozen_patterns=(r"^pos_table$",))
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  new = tree.flatten(jax.tree.map(lambda p, u: p + u, params, updates))
  for path, value in new.items():
    # Zero gradients: only decoupled decay moves a parameter, by lr * wd = 0.05.
    want = 1.0 - 0.05 if path in decayed else 1.0
    np.testing.assert_allclose(value, want, rtol=1e-6, err_msg=path)
  with pytest.raises(ValueError, match="weight_decay_scope"):
    optim.make_optimizer(_opt_config("biases"), params)


def test_ecgfm_config_decays_every_parameter_stmem_only_matrices():
  from configs import ecgfm, finetune, stmem  # pylint: disable=g-import-not-at-top
  assert ecgfm.get_config("variant=mu").weight_decay_scope == "all"
  assert stmem.get_config("variant=mu").weight_decay_scope == "matrices"
  assert finetune.get_config().weight_decay_scope == "matrices"


def _ecg_fm_export(tmp_path):
  enc = models.build_model("ecg_fm_encoder", "mu")
  x = jnp.zeros((1, 12, 2500))
  params = jax.jit(enc.init)(jax.random.PRNGKey(0), x)["params"]
  pp = data.transforms.preset("ecg_fm")
  export_lib.save_export(str(tmp_path / "export"), params,
                         {"model": "ecg_fm", "variant": "mu", "module": "ecg_fm_encoder",
                          "overrides": {}, "embedding": {"dim": 64, "pooling": "mean"}},
                         pp.to_dict())
  return export_lib.load_export(str(tmp_path / "export"))


def test_ecg_fm_finetune_recipe_freezes_the_cnn_and_pools_by_nonzero_count(tmp_path):
  from configs import finetune  # pylint: disable=g-import-not-at-top
  c = finetune.get_config("backbone=export,recipe=ecg_fm")
  assert (c.freeze, c.pooling, c.pos_weight, c.augment) == (
      "cnn", "nonzero_mean", "balanced", "none")
  export = _ecg_fm_export(tmp_path)
  backbone = model_lib.backbone_from_export(export, pooling=c.pooling)
  assert backbone.module.pooling == "nonzero_mean"
  obj = objective_lib.Supervised(backbone, ("A", "B"), mode="full", freeze=c.freeze)
  x = np.random.default_rng(0).normal(size=(4, 12, 2500)).astype(np.float32)
  params, coll = jax.jit(obj.init)(jax.random.PRNGKey(0), {"signal": x})
  total, trainable = optim.count_params(params, obj.frozen_patterns)
  cnn = sum(int(np.size(v)) for p, v in tree.flatten(params).items()
            if p.startswith("backbone/feature_extractor/"))
  assert cnn > 0 and trainable == total - cnn
  # The pooling is sum over time / number of nonzero frames: zero frames do not dilute it.
  h = jnp.asarray(np.concatenate([np.ones((1, 3, 2)), np.zeros((1, 2, 2))], 1))
  np.testing.assert_allclose(models.ecg_fm.pool(h, "nonzero_mean"), [[1.0, 1.0]])
  h = jnp.asarray([[[1.0, 0.0], [3.0, 2.0]]])
  np.testing.assert_allclose(models.ecg_fm.pool(h, "feature_nonzero_mean"), [[2.0, 2.0]])
  with pytest.raises(ValueError, match="neither a group"):
    model_lib.freeze_patterns("cnn,[")


def test_pooling_override_needs_an_encoder_with_pooling(tmp_path):
  enc = models.build_model("st_mem_encoder", "mu", seq_len=300, patch_size=75)
  p = jax.jit(enc.init)(jax.random.PRNGKey(3), jnp.zeros((1, 12, 300)))["params"]
  export_lib.save_export(str(tmp_path / "st"), p,
                         {"model": "st_mem", "variant": "mu", "module": "st_mem_encoder",
                          "overrides": {"seq_len": 300, "patch_size": 75},
                          "embedding": {"dim": 64, "pooling": "mean"}},
                         data.Preprocessing(fs=100.0, samples=300).to_dict())
  with pytest.raises(ValueError, match="has no pooling option"):
    model_lib.backbone_from_export(export_lib.load_export(str(tmp_path / "st")),
                                   pooling="nonzero_mean")


def test_st_mem_finetune_recipe_uses_randaugment():
  from configs import finetune  # pylint: disable=g-import-not-at-top
  c = finetune.get_config("backbone=export,recipe=st_mem")
  assert (c.augment, c.paired, c.weight_decay, c.layer_decay) == (
      "st_mem_randaugment", False, 0.05, 0.0)
  aug = trainer.make_augment(c, 250.0)
  assert isinstance(aug, data.augment.StMemRandAugment)
  # It runs in the training pipeline on standardised crops and changes them.
  src = data.open_source("synthetic:8?seed=0&fs=250&seconds=10")
  pp = data.st_mem_preprocessing()
  plain = next(data.train_iterator(src, pp, global_batch_size=8, seed=0))
  augmented = next(data.train_iterator(src, pp, global_batch_size=8, seed=0, augment=aug))
  assert plain["signal"].shape == augmented["signal"].shape
  assert not np.allclose(plain["signal"], augmented["signal"])
  with pytest.raises(ValueError, match="st_mem_randaugment"):
    trainer.make_augment(ml_collections.ConfigDict({"augment": "randaug"}), 250.0)
  with pytest.raises(ValueError, match="recipe='stmem'"):
    finetune.get_config("backbone=export,recipe=stmem")
