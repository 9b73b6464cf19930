"""Gradient x input, integrated gradients and occlusion against hand computations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import models
from ecgjax.explain import attributions as attr


class _Linear(nn.Module):
  """logits = W . vec(x) + b, returned as (logits, aux) like every ecgjax model."""

  @nn.compact
  def __call__(self, x):
    return nn.Dense(3)(x.reshape(x.shape[0], -1)), {}


def _linear(leads=2, t=20):
  module = _Linear()
  x = np.random.default_rng(0).normal(size=(4, leads, t)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
  w = np.asarray(variables["params"]["Dense_0"]["kernel"])[:, 1].reshape(leads, t)
  return module, variables, x, w


def test_linear_model_attributions_equal_the_hand_computation():
  module, variables, x, w = _linear()
  np.testing.assert_allclose(attr.gradient_x_input(module, variables, x, 1), x * w, rtol=1e-5,
                             atol=1e-6)
  ig = attr.integrated_gradients(module, variables, x, 1, steps=3)
  np.testing.assert_allclose(ig.attributions, x * w, rtol=1e-5, atol=1e-6)  # exact: linear
  np.testing.assert_allclose(ig.delta, (x * w).sum((1, 2)), rtol=1e-4, atol=1e-5)
  assert ig.completeness_error.max() < 1e-4
  occ = attr.occlusion(module, variables, x, 1)  # whole leads
  assert occ.shape == (4, 2, 1)
  np.testing.assert_allclose(occ[..., 0], (x * w).sum(-1), rtol=1e-4, atol=1e-5)
  occ = attr.occlusion(module, variables, x, 1, window=5)
  np.testing.assert_allclose(occ, (x * w).reshape(4, 2, 4, 5).sum(-1), rtol=1e-4, atol=1e-5)


def test_integrated_gradients_completeness_improves_with_steps_on_a_cnn():
  module = models.build_model("resnet1d", "mu", num_classes=2)
  x = np.random.default_rng(1).normal(size=(2, 12, 256)).astype(np.float32)
  variables = module.init(jax.random.PRNGKey(0), jnp.asarray(x))
  coarse = attr.integrated_gradients(module, variables, x, 0, steps=2, baseline="blur")
  fine = attr.integrated_gradients(module, variables, x, 0, steps=64, baseline="blur")
  assert fine.attributions.shape == x.shape
  assert fine.completeness_error.max() < 0.05
  assert fine.completeness_error.mean() < coarse.completeness_error.mean()
  # Randomised weights give other attributions (Adebayo et al.'s sanity check, at init).
  other = module.init(jax.random.PRNGKey(1), jnp.asarray(x))
  again = attr.integrated_gradients(module, other, x, 0, steps=64, baseline="blur")
  r = np.corrcoef(np.abs(fine.attributions).ravel(), np.abs(again.attributions).ravel())[0, 1]
  assert r < 0.9


def test_baselines_and_bad_arguments():
  x = np.random.default_rng(2).normal(size=(1, 2, 200)).astype(np.float32)
  blur = attr.baseline_of(x, "blur")
  assert blur.shape == x.shape and np.abs(np.diff(blur)).mean() < np.abs(np.diff(x)).mean() / 5
  np.testing.assert_array_equal(attr.baseline_of(x, "zero"), 0 * x)
  module, variables, lx, _ = _linear()
  with pytest.raises(ValueError, match="baseline must be"):
    attr.integrated_gradients(module, variables, lx, 0, baseline="noise")
  with pytest.raises(ValueError, match="steps must be"):
    attr.integrated_gradients(module, variables, lx, 0, steps=0)
  with pytest.raises(ValueError, match="window must be"):
    attr.occlusion(module, variables, lx, 0, window=0)
  with pytest.raises(ValueError, match=r"signals \(B, leads, T\)"):
    attr.occlusion(module, variables, lx[0], 0)


def test_explain_cli_integrated_gradients_on_a_signal_classifier_export(tmp_path):
  """finetune/explain.py --export on a (randomly initialised) ResNet1D classifier export:
  attributions of the input's shape, completeness reported, one 12-lead figure per record."""
  import dataclasses
  import os
  import subprocess
  import sys
  from ecgjax import contract, export
  pp = dataclasses.replace(contract.preset("st_mem"), fs=100.0, samples=500, bandpass=None)
  module = models.build_model("resnet1d", "mu", num_classes=2)
  variables = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 500)))
  exp = export.save_export(
      str(tmp_path / "export"), variables["params"],
      {"model": "resnet1d", "variant": "mu", "module": "resnet1d",
       "overrides": {"num_classes": 2},
       "embedding": {"dim": 2, "pooling": "task logits", "labels": ["NORM", "STE"],
                     "task": "multilabel"}},
      pp.to_dict(), collections={"batch_stats": variables["batch_stats"]})
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out = tmp_path / "ig"
  proc = subprocess.run(
      [sys.executable, "finetune/explain.py", "--export", exp, "--data",
       "synthetic:3?seed=2&fs=100&seconds=5", "--method", "integrated_gradients",
       "--steps", "16", "--baseline", "blur", "--target", "STE", "--out", str(out)],
      cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "completeness error: median" in proc.stdout
  z = np.load(out / "integrated_gradients.npz")
  assert z["attributions"].shape == (3, 12, 500) and z["completeness_error"].shape == (3,)
  assert str(z["target"]) == "STE" and z["p"].shape == (3, 2)
  assert len(list(out.glob("*.png"))) == 3
