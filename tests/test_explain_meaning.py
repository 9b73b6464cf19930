"""Attributions that mean something: a small CNN trained to detect the synthetic ST elevation
puts its attribution mass on the ST segments of the leads the generator elevated, the maps
change when its weights are randomised (Adebayo et al. 2018), and integrated gradients add up
to the logit difference (completeness) on the trained model."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy import stats

from ecgjax.data.formats import synthetic
from ecgjax.explain import attributions as attr

FS, SECONDS = 50.0, 5.0


def _records(seed, n):
  """NORM-only and STE-only records, baseline-subtracted, with the elevated-ST mask (where
  the generator's ST wave alone exceeds a quarter of its peak: elevated leads, ST segments)."""
  xs, ys, masks = [], [], []
  for i in range(n):
    x, _, info = synthetic.generate_record(seed, i, fs=FS, seconds=SECONDS, debug=True)
    if set(info["conditions"]) not in ({"NORM"}, {"STE"}):
      continue
    xs.append(x - np.median(x, axis=1, keepdims=True))
    ys.append(float(info["ste"] is not None))
    s = info["ste"]
    masks.append(np.zeros(x.shape, bool) if s is None else s > 0.25 * s.max())
  return np.stack(xs), np.asarray(ys, np.float32), np.stack(masks)


class _CNN(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = jnp.swapaxes(x, 1, 2)
    for features, stride in ((16, 1), (32, 2), (32, 2)):
      h = nn.relu(nn.Conv(features, (7,), strides=(stride,))(h))
    return nn.Dense(1)(h.mean(1)), {}


@pytest.fixture(scope="module")
def trained():
  x, y, _ = _records(0, 900)
  model = _CNN()
  params = jax.jit(model.init)(jax.random.PRNGKey(0), jnp.asarray(x[:1]))
  opt = optax.adam(3e-3)

  @jax.jit
  def step(params, state, xb, yb):
    def loss(p):
      return optax.sigmoid_binary_cross_entropy(model.apply(p, xb)[0][:, 0], yb).mean()
    grads = jax.grad(loss)(params)
    updates, state = opt.update(grads, state, params)
    return optax.apply_updates(params, updates), state

  state = opt.init(params)
  rng = np.random.default_rng(0)
  for _ in range(400):
    idx = rng.integers(0, len(x), 32)
    params, state = step(params, state, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
  return model, params


def _mass(a, mask):
  a = np.abs(a)
  return (a * mask).sum((1, 2)) / a.sum((1, 2))


def test_attribution_mass_sits_on_the_elevated_st_segments_and_randomisation_moves_it(trained):
  model, params = trained
  x, y, mask = _records(1, 300)
  from sklearn.metrics import roc_auc_score  # pylint: disable=g-import-not-at-top
  logits = np.asarray(model.apply(params, jnp.asarray(x))[0][:, 0])
  assert roc_auc_score(y, logits) > 0.95  # the model does detect the elevation
  pos = y == 1
  xp, mp = x[pos], mask[pos]
  chance = mp.mean((1, 2))  # the mask's share of the record: a map that ignores it scores this
  random = jax.jit(model.init)(jax.random.PRNGKey(123), jnp.asarray(x[:1]))
  for method in ("gradient", "integrated_gradients"):
    def explain(p):
      if method == "gradient":
        return attr.gradient_x_input(model, p, xp, 0)
      return attr.integrated_gradients(model, p, xp, 0, steps=32).attributions
    a, b = explain(params), explain(random)
    ratio = np.median(_mass(a, mp) / chance)
    ratio_random = np.median(_mass(b, mp) / chance)
    assert ratio > 1.7, (method, ratio)  # measured: 2.15 (gradient), 2.22 (IG); random 1.45
    assert ratio > ratio_random + 0.4, (method, ratio, ratio_random)
    rho = np.median([stats.spearmanr(np.abs(a[i]).ravel(), np.abs(b[i]).ravel())[0]
                     for i in range(len(a))])
    assert rho < 0.7, (method, rho)  # the maps change with the weights (measured 0.46-0.48)


def test_integrated_gradients_completeness_on_the_trained_model(trained):
  model, params = trained
  x, y, _ = _records(2, 60)
  ig = attr.integrated_gradients(model, params, x[y == 1], 0, steps=64)
  # Stated tolerance: the attributions sum to the logit difference within 2% (median) and 10%
  # (worst record) of it at 64 steps.
  assert np.median(ig.completeness_error) < 0.02 and ig.completeness_error.max() < 0.1
