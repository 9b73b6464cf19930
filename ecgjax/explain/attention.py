"""Attention rollout (Abnar and Zuidema 2020) of the transformer encoders, mapped back onto
the input: leads x patches for ST-MEM and the hybrid's encoder, time frames for ECG-FM.

Each attention layer's weights (sown by the attention modules into the `intermediates`
collection only when a caller asks for it, so training and inference pay nothing) are averaged
over heads; the residual connection is accounted for as 0.5 A + 0.5 I, rows renormalised; the
rollout is the product of these over the layers, first layer rightmost. How much the pooled
embedding draws on input token j is then the mean of rollout row i over the tokens the encoder
pools (ST-MEM: every patch token, not the SEPs; ECG-FM: every frame), and the per-token values
sum to 1 over all tokens (SEPs included). The map depends on the input only, not on a class:
it says where the encoder's mixing routes information from, which is why it also works on an
encoder export that has no task head.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ecgjax.models import ecg_fm, st_mem

TRANSFORMERS = (st_mem.STMEMEncoder, ecg_fm.ECGFMEncoder)


class NoAttentionError(ValueError):
  """The model has no attention layers to roll out (a CNN)."""


class Rollout(NamedTuple):
  """Attention rollout of a batch, per token and on the input."""
  tokens: np.ndarray  # (B, leads, patches) for ST-MEM; (B, frames) for ECG-FM
  attributions: np.ndarray  # (B, leads, T): each sample carries its token's value
  layers: int  # attention layers rolled out


def _encoder_of(module: nn.Module, variables: Any, x: jax.Array, kwargs: dict) -> nn.Module:
  """The transformer encoder the forward pass calls (raises NoAttentionError if none)."""
  seen: list[nn.Module] = []

  def record(next_fun, args, kw, ctx):
    if ctx.method_name == "__call__" and isinstance(ctx.module, TRANSFORMERS):
      seen.append(ctx.module)
    return next_fun(*args, **kw)

  def run(v, x):
    with nn.intercept_methods(record):
      return module.apply(v, x, **kwargs)

  jax.eval_shape(run, variables, x)
  if not seen:
    raise NoAttentionError(
        f"{type(module).__name__} has no attention layers: attention rollout applies to "
        "transformer encoders (ST-MEM, the hybrid, ECG-FM); explain a CNN with gradcam, "
        "gradient, integrated_gradients or occlusion")
  return seen[0]


def _attention_maps(tree: Any) -> list[jax.Array]:
  """The sown (B, N, N) maps in call order (dicts keep insertion order, which is call order;
  jax's tree flattening would sort block_10 before block_2)."""
  out: list[jax.Array] = []
  if isinstance(tree, dict) or hasattr(tree, "items"):
    for key, value in tree.items():
      if key == "attention":
        out.extend(value)
      else:
        out.extend(_attention_maps(value))
  return out


def rollout_matrix(maps: list[jax.Array]) -> jax.Array:
  """prod_l normalise(0.5 A_l + 0.5 I), last layer leftmost: (B, N, N)."""
  n = maps[0].shape[-1]
  eye = jnp.eye(n, dtype=jnp.float32)
  out = jnp.broadcast_to(eye, maps[0].shape)
  for a in maps:
    a = 0.5 * a.astype(jnp.float32) + 0.5 * eye
    a = a / a.sum(-1, keepdims=True)
    out = jnp.einsum("bij,bjk->bik", a, out)
  return out


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _rollout(module: nn.Module, n_tokens: int, variables: Any, kw: tuple, x: jax.Array
             ) -> tuple[jax.Array, int]:
  _, state = module.apply(variables, x, mutable=["intermediates"], **dict(
      (k, np.asarray(v, np.int32)) for k, v in kw))
  maps = [m for m in _attention_maps(state.get("intermediates", {}))
          if m.shape[-1] == n_tokens]
  return rollout_matrix(maps), len(maps)


_PLANS: dict[tuple[Any, ...], tuple[nn.Module, int]] = {}
_MAX_PLANS = 32


def _plan(module: nn.Module, variables: Any, x: jax.Array, kwargs: dict, kw: tuple
          ) -> tuple[nn.Module, int]:
  """(the encoder inside `module`, its token count) for inputs of x's shape: two abstract
  traces, done once per (module, shape, lead subset) so that explaining batch after batch
  costs only the rollout itself."""
  key = (module, tuple(x.shape), kw)
  if key not in _PLANS:
    encoder = _encoder_of(module, variables, x, kwargs)
    if isinstance(encoder, st_mem.STMEMEncoder):
      n_tokens = x.shape[1] * (x.shape[2] // encoder.patch_size + 2)
    else:  # frames: read off the maps
      _, state = jax.eval_shape(
          lambda v, x: module.apply(v, x, mutable=["intermediates"], **kwargs), variables, x)
      n_tokens = _attention_maps(state["intermediates"])[0].shape[-1]
    if len(_PLANS) >= _MAX_PLANS:
      _PLANS.pop(next(iter(_PLANS)))
    _PLANS[key] = (encoder, int(n_tokens))
  return _PLANS[key]


def attention_rollout(module: nn.Module, variables: Any, x: Any, *,
                      lead_idx: Any = None) -> Rollout:
  """Attention rollout of the transformer encoder inside `module` (an encoder or a classifier
  built on one) for signals x (B, leads, T); see the module docstring."""
  x = jnp.asarray(x, jnp.float32)
  if x.ndim != 3:
    raise NoAttentionError(f"attention rollout takes signals (B, leads, T), got {x.shape}")
  kwargs = {} if lead_idx is None else {"lead_idx": np.asarray(lead_idx, np.int32)}
  kw = tuple(sorted((k, tuple(np.asarray(v).tolist())) for k, v in kwargs.items()))
  encoder, n_tokens = _plan(module, variables, x, kwargs, kw)
  b, n_leads, t = x.shape
  n_patch = t // encoder.patch_size if isinstance(encoder, st_mem.STMEMEncoder) else 0
  matrix, n_layers = _rollout(module, int(n_tokens), variables, kw, x)
  matrix = np.asarray(matrix)
  if isinstance(encoder, st_mem.STMEMEncoder):
    per_lead = n_patch + 2
    pooled = np.zeros(n_tokens, bool)
    pooled.reshape(n_leads, per_lead)[:, 1:-1] = True  # patch tokens; SEPs are not pooled
    relevance = matrix[:, pooled].mean(1)  # (B, N)
    tokens = relevance.reshape(b, n_leads, per_lead)[:, :, 1:-1]
    samples = np.repeat(tokens, encoder.patch_size, axis=-1)
    attr = np.zeros((b, n_leads, t), np.float32)
    attr[..., :samples.shape[-1]] = samples
  else:
    tokens = matrix.mean(1)  # (B, frames): every frame is pooled
    # Frame j summarises about samples [j, j + 1) * T / frames (the convolutional stack's
    # stride); each sample takes its frame's value, and every lead the same (frames mix leads).
    frame_of = np.minimum((np.arange(t) * tokens.shape[-1]) // t, tokens.shape[-1] - 1)
    attr = np.broadcast_to(tokens[:, None, frame_of], (b, n_leads, t)).astype(np.float32)
  return Rollout(np.asarray(tokens, np.float32), np.ascontiguousarray(attr), int(n_layers))
