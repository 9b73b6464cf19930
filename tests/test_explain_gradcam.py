"""Grad-CAM: shapes, the layer it reads, and that the map follows a discriminative mark."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ecgjax import explain, models

SIZE = 48


def _images(n, rng, with_mark):
  """White pictures with faint noise; with_mark: a black 8x8 square at a random place."""
  x = np.ones((n, SIZE, SIZE, 1), np.float32) - 0.1 * rng.random((n, SIZE, SIZE, 1))
  where = rng.integers(4, SIZE - 12, size=(n, 2))
  for i in np.flatnonzero(with_mark):
    r, c = where[i]
    x[i, r:r + 8, c:c + 8] = 0.0
  return x, where


@pytest.fixture(scope="module")
def trained():
  """A tiny ResNet2D (two stages: a 6x6 last map) trained to say whether a square is there."""
  model = models.build_model("resnet2d", "mu", num_classes=1, stage_sizes=(1, 1),
                             spatial_attention=False)
  rng = np.random.default_rng(0)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, SIZE, SIZE, 1)))
  params, stats = variables["params"], variables["batch_stats"]
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, stats, opt_state, x, y):
    def loss_fn(p):
      (logits, _), upd = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                                     mutable=["batch_stats"])
      return optax.sigmoid_binary_cross_entropy(logits[:, 0], y).mean(), upd["batch_stats"]
    (loss, stats), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = opt.update(g, opt_state, params)
    return optax.apply_updates(params, updates), stats, opt_state, loss

  for _ in range(150):
    y = rng.random(32) < 0.5
    x, _ = _images(32, rng, y)
    params, stats, opt_state, loss = step(params, stats, opt_state, x, y.astype(np.float32))
  assert float(loss) < 0.2, float(loss)
  return model, {"params": params, "batch_stats": stats}


def test_map_has_the_input_size_and_reads_the_last_stage(trained):
  model, variables = trained
  x, _ = _images(3, np.random.default_rng(1), np.ones(3, bool))
  assert explain.feature_layer(model, variables, jnp.asarray(x)) == ("body", "stage1_block0")
  cam = explain.gradcam(model, variables, x, target=0)
  assert cam.shape == (3, SIZE, SIZE) and cam.min() >= 0 and np.allclose(cam.max((1, 2)), 1)
  over = explain.overlay(x[0], cam[0])
  thr = explain.thresholded(x[0], cam[0])
  assert over.shape == thr.shape == (SIZE, SIZE, 3) and over.dtype == np.uint8


def test_map_follows_the_mark_when_it_moves(trained):
  model, variables = trained
  rng = np.random.default_rng(2)
  x, where = _images(16, rng, np.ones(16, bool))
  cam = explain.gradcam(model, variables, x, target=0)
  centre = where + 4
  # Attribution mass within 10 px of the square's centre, vs. the same mass for a square
  # that is elsewhere (the map of another picture): the map moves with the mark.
  yy, xx = np.mgrid[:SIZE, :SIZE]
  def mass(c, r):
    near = (yy - r[0]) ** 2 + (xx - r[1]) ** 2 <= 10 ** 2
    return (c * near).sum() / c.sum()
  own = np.mean([mass(cam[i], centre[i]) for i in range(16)])
  other = np.mean([mass(cam[i], centre[(i + 8) % 16]) for i in range(16)])
  assert own > other + 0.2, (own, other)
  peak = np.array([np.unravel_index(np.argmax(c), c.shape) for c in cam])
  assert np.median(np.abs(peak - centre).max(1)) <= 8


def test_one_dimensional_cnn_gives_a_map_along_time():
  model = models.build_model("resnet1d", "mu", num_classes=2)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 500))
  variables = model.init(jax.random.PRNGKey(1), x)
  cam = explain.gradcam(model, variables, x, target=1)
  assert cam.shape == (2, 500) and 0 <= cam.min() and cam.max() <= 1
