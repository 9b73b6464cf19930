"""PCGrad (Yu et al. 2020) as the engine's gradient combiner, in two variants (SPEC.md 4).

paper      for each task i: g_i' = g_i, then for every other task j in a random order,
           if g_i' . g_j < 0: g_i' -= (g_i' . g_j / |g_j|^2) g_j (g_j the ORIGINAL gradient);
           the update is the SUM of the g_i'.
reference  AnyECG-CCTA's code: tasks in a fixed order, g_i projected only against the tasks
           j > i (the last task is never projected); the update is the MEAN.

Gradients arrive stacked on a leading task axis (`ecgjax.train.step` computes them with one
vector-Jacobian product per task) and are flattened to a (T, P) matrix once.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from ecgjax.objectives.base import GradCombiner

VARIANTS = ("none", "paper", "reference")
PyTree = Any


def project(grads: jax.Array, order: jax.Array, allowed: jax.Array) -> jax.Array:
  """Projected task gradients (T, P): task i visits order[i] and projects where allowed.

  grads: (T, P) original gradients; order: (T, T) task indices per task; allowed: (T, T)
  bool, allowed[i, j] = task i may be projected against task j.
  """
  n_tasks = grads.shape[0]
  sq = jnp.sum(grads * grads, axis=1)

  def one(i, order_i):
    def body(k, g):
      j = order_i[k]
      gj = grads[j]
      dot = jnp.dot(g, gj)
      hit = (j != i) & allowed[i, j] & (dot < 0)
      # A zero g_j has nothing to project against (and would divide by zero).
      coef = jnp.where(hit & (sq[j] > 0), dot / jnp.where(sq[j] > 0, sq[j], 1.0), 0.0)
      return g - coef * gj
    return jax.lax.fori_loop(0, n_tasks, body, grads[i])

  return jax.vmap(one)(jnp.arange(n_tasks), order)


def combine_flat(grads: jax.Array, variant: str, rng: jax.Array | None = None) -> jax.Array:
  """One gradient (P,) from task gradients (T, P) by PCGrad `variant` (paper | reference)."""
  n_tasks = grads.shape[0]
  grads = grads.astype(jnp.float32)
  if variant == "paper":
    if rng is None:
      raise ValueError("the paper's PCGrad visits tasks in a random order: give an rng")
    keys = jax.random.split(rng, n_tasks)
    order = jax.vmap(lambda k: jax.random.permutation(k, n_tasks))(keys)
    allowed = jnp.ones((n_tasks, n_tasks), bool)
    return project(grads, order, allowed).sum(0)
  if variant == "reference":
    order = jnp.broadcast_to(jnp.arange(n_tasks), (n_tasks, n_tasks))
    allowed = jnp.arange(n_tasks)[None, :] > jnp.arange(n_tasks)[:, None]
    return project(grads, order, allowed).mean(0)
  raise ValueError(f"PCGrad variant must be 'paper' or 'reference', got {variant!r}")


def combine(per_task: PyTree, variant: str, rng: jax.Array | None = None) -> PyTree:
  """PCGrad over a pytree whose leaves carry a leading task axis; returns one pytree."""
  leaves, treedef = jax.tree.flatten(per_task)
  n_tasks = leaves[0].shape[0]
  flat = jnp.concatenate([x.reshape(n_tasks, -1).astype(jnp.float32) for x in leaves], 1)
  g = combine_flat(flat, variant, rng)
  out, start = [], 0
  for x in leaves:
    size = x[0].size
    out.append(g[start:start + size].reshape(x.shape[1:]).astype(x.dtype))
    start += size
  return jax.tree.unflatten(treedef, out)


def make_combiner(variant: str) -> GradCombiner | None:
  """The engine's `grad_combiner(per_task, rng)` for `variant`; None for "none"."""
  if variant not in VARIANTS:
    raise ValueError(f"pcgrad must be one of {VARIANTS}, got {variant!r}")
  if variant == "none":
    return None
  return lambda per_task, rng: combine(per_task, variant, rng)
