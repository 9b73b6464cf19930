"""Fine-tuning losses, uncertainty weighting and PCGrad against hand computations."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ecgjax.objectives import losses, pcgrad, weighting
from ecgjax.train import mesh as mesh_lib
from ecgjax.train import step as step_lib
from tests.helpers import QuadraticObjective


def _sig(z):
  return 1.0 / (1.0 + np.exp(-z))


def test_binary_recall_loss_matches_hand_computation():
  # One label, 5 rows. Predictions at p = 0.5 threshold: [1, 0, 0, 1, 0].
  logits = np.array([[2.0], [-1.0], [-0.5], [0.3], [-2.0]], np.float32)
  y = np.array([[1], [1], [0], [0], [1]], np.float32)
  # Recall of class 1: 1 of 3 positives predicted positive; of class 0: 1 of 2 negatives.
  rec1, rec0 = 1 / 3, 1 / 2
  p = _sig(logits[:, 0].astype(np.float64))
  ce = -(y[:, 0] * np.log(p) + (1 - y[:, 0]) * np.log(1 - p))
  w = np.where(y[:, 0] == 1, 1 - rec1, 1 - rec0)
  expected = np.mean(w * ce)
  got = losses.binary_recall(jnp.asarray(logits), jnp.asarray(y))
  np.testing.assert_allclose(np.asarray(got), [expected], rtol=1e-6)
  r1, r0 = losses.batch_recall(jnp.asarray(logits), jnp.asarray(y))
  np.testing.assert_allclose([float(r1[0]), float(r0[0])], [rec1, rec0], rtol=1e-6)
  # The recall is a constant weight: the gradient is that of the weighted cross-entropy.
  g = jax.grad(lambda z: losses.binary_recall(z, jnp.asarray(y)).sum())(jnp.asarray(logits))
  np.testing.assert_allclose(np.asarray(g)[:, 0], w * (p - y[:, 0]) / 5, rtol=1e-5)


def test_bce_pos_weight_and_focal_match_formulas():
  z = np.array([[1.5, -0.2], [-2.0, 0.7], [0.1, 3.0]], np.float32)
  y = np.array([[1, 0], [0, 1], [1, 1]], np.float32)
  p = _sig(z.astype(np.float64))
  pw = np.array([3.0, 0.5])
  bce = -(pw * y * np.log(p) + (1 - y) * np.log(1 - p)).mean(0)
  np.testing.assert_allclose(losses.bce(z, y, pos_weight=pw), bce, rtol=1e-6)
  pt = np.where(y == 1, p, 1 - p)
  at = np.where(y == 1, 0.25, 0.75)
  focal = (-at * (1 - pt) ** 2 * np.log(pt)).mean(0)
  np.testing.assert_allclose(losses.focal(z, y, gamma=2.0, alpha=0.25), focal, rtol=1e-5)
  # Padded rows (weight 0) change nothing.
  zz, yy = np.concatenate([z, z[:1] * 9]), np.concatenate([y, 1 - y[:1]])
  np.testing.assert_allclose(losses.bce(zz, yy, row_weight=jnp.array([1., 1., 1., 0.])),
                             losses.bce(z, y), rtol=1e-6)


def test_softmax_ce_ignores_rows_without_exactly_one_class():
  z = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0], [5.0, 5.0, 5.0]], np.float32)
  y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0]], np.float32)
  logp = z - np.log(np.exp(z).sum(1, keepdims=True))
  expected = -(logp[0, 0] + logp[1, 1]) / 2
  np.testing.assert_allclose(losses.softmax_ce(z, y), [expected], rtol=1e-6)


def test_uncertainty_weighting_value_and_gradient():
  task = jnp.array([0.5, 2.0])
  s = jnp.array([0.0, np.log(2.0)], jnp.float32)
  terms = weighting.uncertainty_weighted(task, s)
  np.testing.assert_allclose(terms, [0.5, 1.0 + np.log(2.0)], rtol=1e-6)
  # d/ds_t [exp(-s_t) L_t + s_t] = 1 - exp(-s_t) L_t; zero where s_t = log L_t (task 2).
  g = jax.grad(lambda s: weighting.uncertainty_weighted(task, s).sum())(s)
  np.testing.assert_allclose(g, [1 - 0.5, 0.0], atol=1e-6)
  gl = jax.grad(lambda l: weighting.uncertainty_weighted(l, s).sum())(task)
  np.testing.assert_allclose(gl, [1.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(weighting.weighted_tasks(task, "none"), [0.25, 1.0])


def test_pcgrad_toy_both_variants():
  g = jnp.array([[1.0, 0.0], [-1.0, 1.0]])
  np.testing.assert_allclose(pcgrad.combine_flat(g, "reference"), [-0.25, 0.75], atol=1e-7)
  for seed in range(4):  # two tasks: every order gives the same result
    got = pcgrad.combine_flat(g, "paper", jax.random.PRNGKey(seed))
    np.testing.assert_allclose(got, [0.5, 1.5], atol=1e-7)
  # The projected gradients themselves (SPEC.md section 4).
  order = jnp.array([[0, 1], [0, 1]])
  proj = pcgrad.project(g, order, jnp.ones((2, 2), bool))
  np.testing.assert_allclose(proj, [[0.5, 0.5], [0.0, 1.0]], atol=1e-7)
  # No conflict, nothing changes: the paper sums, the reference averages.
  h = jnp.array([[1.0, 0.0], [1.0, 1.0]])
  np.testing.assert_allclose(pcgrad.combine_flat(h, "paper", jax.random.PRNGKey(0)), [2, 1])
  np.testing.assert_allclose(pcgrad.combine_flat(h, "reference"), [1, 0.5])


def test_pcgrad_paper_projects_against_original_gradients_in_random_order():
  g = jnp.array([[1.0, 0.0, 0.0], [-1.0, 1.0, 0.0], [-1.0, -1.0, 1.0]])
  seen = set()
  for seed in range(12):
    seen.add(tuple(np.round(np.asarray(pcgrad.combine_flat(g, "paper",
                                                             jax.random.PRNGKey(seed))), 5)))
  assert len(seen) > 1  # the order matters with three conflicting tasks, and it is random
  # Hand computation for task 0 visiting 1 then 2: (1,0,0) -> (.5,.5,0) -> dot with g2 = -1
  # -> + (1/3) g2 = (1/6, 1/6, 1/3).
  order = jnp.array([[1, 2, 0], [0, 2, 1], [0, 1, 2]])
  proj = pcgrad.project(g, order, jnp.ones((3, 3), bool))
  np.testing.assert_allclose(proj[0], [1 / 6, 1 / 6, 1 / 3], rtol=1e-5)


def test_pcgrad_over_a_pytree_and_through_the_engine():
  per_task = {"a": jnp.array([[1.0], [-1.0]]), "b": {"c": jnp.array([0.0, 1.0])}}
  out = pcgrad.combine(per_task, "reference")
  np.testing.assert_allclose(out["a"], [-0.25])
  np.testing.assert_allclose(out["b"]["c"], 0.75)
  # The engine hands the combiner the objective's per-task gradients in task order.
  obj = QuadraticObjective()
  obj.grad_combiner = pcgrad.make_combiner("paper")
  batch = {"signal": jnp.ones((8, 2, 4)) * 0.5}
  tx = optax.sgd(1.0)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  state = step_lib.init_state(obj, tx, batch, 0)
  new, _ = jax.jit(step_lib.make_train_step(obj, tx, mesh,
                                            grad_combiner=obj.grad_combiner))(state, batch)
  ga = jax.grad(lambda p: obj.loss(p, state["collections"], batch, None, 0)[1].tasks["a"])(
      state["params"])
  gb = jax.grad(lambda p: obj.loss(p, state["collections"], batch, None, 0)[1].tasks["b"])(
      state["params"])
  flat = lambda t: np.concatenate([np.ravel(t["frozen"]), np.ravel(t["w"])])
  want = np.asarray(pcgrad.combine_flat(jnp.stack([flat(ga), flat(gb)]), "paper",
                                        jax.random.PRNGKey(0)))
  got = flat(jax.tree.map(lambda a, b: a - b, state["params"], new["params"]))
  # Two tasks: the result does not depend on the random order.
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_unknown_names_are_errors():
  with pytest.raises(ValueError, match="pcgrad"):
    pcgrad.make_combiner("both")
  with pytest.raises(ValueError, match="weighting"):
    weighting.weighted_tasks(jnp.ones(2), "kendall")
  with pytest.raises(ValueError, match="loss"):
    losses.multilabel("hinge", jnp.ones((1, 1)), jnp.ones((1, 1)))
