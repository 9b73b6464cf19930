"""Shared test helpers: error/count measures, a tiny deterministic objective, a small config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ecgjax import objectives
from ecgjax.objectives import base


def rel_err(got, ref) -> float:
  """max |got - ref| / max |ref|."""
  got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
  return float(np.abs(got - ref).max() / np.abs(ref).max())


def n_params(tree) -> int:
  """Number of scalars in a tree (concrete or abstract)."""
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


class QuadraticObjective(base.Objective):
  """Two-task least squares on the signal mean; NaN from `nan_from_step` on (for tests)."""

  frozen_patterns = (r"^frozen$",)

  def __init__(self, nan_from_step: int = -1):
    self.nan_from_step = nan_from_step

  def init(self, rng, batch):
    return {"w": jax.random.normal(rng, (3,)), "frozen": jnp.ones((2,))}, {"count": jnp.zeros(())}

  def loss(self, params, collections, batch, rng, step):
    del rng
    feat = batch["signal"].mean(axis=(1, 2))  # (B,)
    a = jnp.mean((params["w"][0] * feat - 1.0) ** 2) + jnp.sum(params["frozen"]) * 0.1
    b = jnp.mean((params["w"][1] * feat + params["w"][2]) ** 2)
    loss = a + b
    if self.nan_from_step >= 0:
      loss = jnp.where(step >= self.nan_from_step, jnp.nan, loss)
    return loss, base.LossAux(terms={"a": a, "b": b}, metrics={},
                              collections={"count": collections["count"] + 1},
                              tasks={"a": a, "b": b})

  def export_encoder(self, params, collections):
    return {"params": params}, {"model": "quadratic", "variant": "none", "module": "none",
                    "embedding": {"dim": 3, "pooling": "none"}}


@objectives.register("test_quadratic")
def _quadratic(config):
  return QuadraticObjective()


@objectives.register("test_nan_at_3")
def _nan(config):
  return QuadraticObjective(nan_from_step=3)


def tiny_stmem_config(**overrides):
  """`configs/stmem.py:variant=mu,runlocal` shrunk for tests (few records, tiny batches)."""
  from configs import stmem
  c = stmem.get_config("variant=mu,runlocal")
  c.data = "synthetic:64?seed=3&fs=250&seconds=10"
  c.batch_size = 8
  c.total_steps = 4
  c.warmup_steps = 1
  c.log_every_steps = 1
  c.checkpoint_every_steps = 2
  c.vis_every_steps = 0
  for k, v in overrides.items():
    setattr(c, k, v)
  return c
