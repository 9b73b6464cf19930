"""norm_pix_loss: ST-MEM's normalised-pixel MSE on masked patches (ddof=1 target variance)."""

import jax.numpy as jnp
import numpy as np

from ecgjax.objectives.mae import norm_pix_loss


def _example(seed: int = 0):
  rng = np.random.default_rng(seed)
  x = rng.normal(2.0, 3.0, size=(2, 3, 40)).astype(np.float32)  # 3 leads, 5 patches of 8
  pred = rng.normal(size=(2, 3, 5, 8)).astype(np.float32)
  mask = (rng.uniform(size=(2, 3, 5)) < 0.6).astype(np.float32)
  mask[0, 0, 0], mask[0, 0, 1] = 1.0, 0.0  # at least one masked and one visible patch
  return x, pred, mask


def test_matches_numpy_with_unbiased_variance():
  x, pred, mask = _example()
  t = x.astype(np.float64).reshape(2, 3, 5, 8)
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
  per_patch = ((pred - t) ** 2).mean(-1)
  want = (per_patch * mask).sum() / mask.sum()
  got = norm_pix_loss(x, pred, mask, 8)
  np.testing.assert_allclose(float(got), want, rtol=1e-6)
  # ddof=0 (jnp.var's default) would be measurably different: a regression guard.
  t0 = x.reshape(2, 3, 5, 8)
  t0 = (t0 - t0.mean(-1, keepdims=True)) / np.sqrt(t0.var(-1, keepdims=True) + 1e-6)
  biased = ((((pred - t0) ** 2).mean(-1)) * mask).sum() / mask.sum()
  assert abs(biased - want) > 1e-3


def test_only_masked_patches_count():
  x, pred, mask = _example(1)
  base = norm_pix_loss(x, pred, mask, 8)
  visible = (1 - mask)[..., None]
  assert float(norm_pix_loss(x, pred + 7.0 * visible, mask, 8)) == float(base)
  assert float(norm_pix_loss(x, pred + 7.0 * mask[..., None], mask, 8)) != float(base)


def test_bfloat16_pred_gives_float32_loss():
  x, pred, mask = _example(2)
  got = norm_pix_loss(x, jnp.asarray(pred, jnp.bfloat16), mask, 8)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(float(got), float(norm_pix_loss(x, pred, mask, 8)), rtol=1e-2)
