"""Multi-task loss weighting: fixed (mean over tasks) or Kendall uncertainty weighting."""

from __future__ import annotations

import jax
import jax.numpy as jnp

WEIGHTINGS = ("none", "uncertainty")


def init_log_vars(n_tasks: int) -> jax.Array:
  """s_t = log sigma_t^2 = 0: every task starts at weight 1."""
  return jnp.zeros((n_tasks,), jnp.float32)


def uncertainty_weighted(task_losses: jax.Array, log_vars: jax.Array) -> jax.Array:
  """Kendall et al. 2018, SPEC.md section 4's first form: exp(-s_t) L_t + s_t per task.

  The paper's 1/(2 sigma^2) L + log sigma has the same optimum and half the gradient.
  d/ds_t = 1 - exp(-s_t) L_t: s_t settles at log L_t, weighting each task by 1 / L_t.
  """
  s = log_vars.astype(jnp.float32)
  return jnp.exp(-s) * task_losses + s


def weighted_tasks(task_losses: jax.Array, weighting: str,
                   log_vars: jax.Array | None = None) -> jax.Array:
  """Per-task terms whose sum is the loss: L_t / T ("none", the usual mean) or Kendall's."""
  if weighting == "none":
    return task_losses / task_losses.shape[0]
  if weighting == "uncertainty":
    if log_vars is None:
      raise ValueError("uncertainty weighting needs log_vars")
    return uncertainty_weighted(task_losses, log_vars)
  raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
