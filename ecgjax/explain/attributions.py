"""Input attributions of any flax model `module.apply(variables, x) -> (logits, aux)`: gradient x
input, integrated gradients, occlusion. Each returns an array of the input's shape (or (B, leads,
windows) for occlusion) for one target output; all are batched and jitted.

- `gradient_x_input`: x * d logit_k / dx (Shrikumar et al. 2016; Simonyan et al. 2014 for the
  gradient).
- `integrated_gradients` (Sundararajan et al. 2017): (x - x0) * the mean of d logit_k / dx on
  `steps` points of the straight path from a baseline x0 to x (midpoint rule). Completeness:
  the attributions sum to logit_k(x) - logit_k(x0) up to the path discretisation, reported per
  record as `completeness_error` (relative to |logit_k(x) - logit_k(x0)|) so users see how many
  steps they need. Baselines: `zero` (flat signal) or `blur` (a Gaussian-smoothed copy of the
  record: the slow waves stay, the sharp features go).
- `occlusion` (Zeiler and Fergus 2014): the drop of logit_k when one lead over one time window
  is replaced by the baseline, for every (lead, window); per-lead occlusion is one window
  spanning the record.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np



def _logits(module: Any, variables: Any, x: jax.Array) -> jax.Array:
  out = module.apply(variables, x)
  return (out[0] if isinstance(out, tuple) else out).astype(jnp.float32)


def _target_sum(module: Any, target: int) -> Callable[[Any, jax.Array], jax.Array]:
  # Rows are independent in inference mode, so the gradient of the summed target logit gives
  # each row's own gradient in one backward pass.
  return lambda variables, x: _logits(module, variables, x)[:, target].sum()


# The module (hashable, compared by its fields) and the target are static; the variables are an
# argument, so a model compiles once per input shape, not once per call.
@functools.partial(jax.jit, static_argnums=(0, 1))
def _grad(module: Any, target: int, variables: Any, x: jax.Array) -> jax.Array:
  return jax.grad(_target_sum(module, target), argnums=1)(variables, x)


def gradient_x_input(module: Any, variables: Any, x: Any, target: int) -> np.ndarray:
  """x * d logit_target / dx, the input's shape."""
  x = jnp.asarray(x, jnp.float32)
  return np.asarray(x * _grad(module, int(target), variables, x))


def blur_baseline(x: Any, sigma_samples: float = 25.0) -> np.ndarray:
  """A Gaussian-smoothed copy along the last axis (time): the baseline for `blur`."""
  from scipy import ndimage  # pylint: disable=g-import-not-at-top
  return ndimage.gaussian_filter1d(np.asarray(x, np.float32), sigma_samples, axis=-1,
                                   mode="nearest")


def baseline_of(x: Any, baseline: str | Any) -> np.ndarray:
  """The baseline array: "zero", "blur", or an array broadcastable to x."""
  x = np.asarray(x, np.float32)
  if isinstance(baseline, str):
    if baseline == "zero":
      return np.zeros_like(x)
    if baseline == "blur":
      return blur_baseline(x)
    raise ValueError(f"baseline must be 'zero', 'blur' or an array, got {baseline!r}")
  return np.broadcast_to(np.asarray(baseline, np.float32), x.shape).copy()


class IntegratedGradients(NamedTuple):
  """Attributions (the input's shape) and how well they add up."""
  attributions: np.ndarray
  delta: np.ndarray  # (B,) logit_target(x) - logit_target(baseline)
  completeness_error: np.ndarray  # (B,) |sum(attributions) - delta| / max(|delta|, 1e-6)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _ig(module: Any, target: int, steps: int, variables: Any, x: jax.Array, x0: jax.Array):
  alphas = (jnp.arange(steps, dtype=jnp.float32) + 0.5) / steps
  grad = jax.grad(_target_sum(module, target), argnums=1)

  def body(acc, a):
    return acc + grad(variables, x0 + a * (x - x0)), None

  total, _ = jax.lax.scan(body, jnp.zeros_like(x), alphas)
  attr = (x - x0) * total / steps
  delta = (_logits(module, variables, x)[:, target]
           - _logits(module, variables, x0)[:, target])
  return attr, delta


def integrated_gradients(module: Any, variables: Any, x: Any, target: int, *,
                         baseline: str | Any = "zero", steps: int = 32) -> IntegratedGradients:
  """Integrated gradients of logit `target` from `baseline` to x (module docstring)."""
  if steps < 1:
    raise ValueError(f"steps must be >= 1, got {steps}")
  x = np.asarray(x, np.float32)
  x0 = baseline_of(x, baseline)
  attr, delta = _ig(module, int(target), int(steps), variables, jnp.asarray(x),
                    jnp.asarray(x0))
  attr, delta = np.asarray(attr), np.asarray(delta)
  total = attr.reshape(len(attr), -1).sum(1)
  err = np.abs(total - delta) / np.maximum(np.abs(delta), 1e-6)
  return IntegratedGradients(attr, delta, err)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _target_logit(module: Any, target: int, variables: Any, x: jax.Array) -> jax.Array:
  return _logits(module, variables, x)[:, target]


def occlusion(module: Any, variables: Any, x: Any, target: int, *, window: int | None = None,
              baseline: str | Any = "zero") -> np.ndarray:
  """logit_target(x) - logit_target(x with lead l over window w replaced by the baseline), as
  (B, leads, windows); x is (B, leads, T); window=None occludes whole leads (windows = 1)."""
  x = np.asarray(x, np.float32)
  if x.ndim != 3:
    raise ValueError(f"occlusion takes signals (B, leads, T), got shape {x.shape}")
  b, n_leads, t = x.shape
  window = t if window is None else int(window)
  if not 1 <= window <= t:
    raise ValueError(f"window must be in [1, {t}] samples, got {window}")
  x0 = baseline_of(x, baseline)
  starts = list(range(0, t, window))
  ref = np.asarray(_target_logit(module, int(target), variables, jnp.asarray(x)))
  out = np.zeros((b, n_leads, len(starts)), np.float32)
  for lead in range(n_leads):
    for j, s in enumerate(starts):  # one jitted forward per (lead, window), whole batch
      occluded = x.copy()
      occluded[:, lead, s:s + window] = x0[:, lead, s:s + window]
      out[:, lead, j] = ref - np.asarray(_target_logit(module, int(target), variables,
                                                       jnp.asarray(occluded)))
  return out
