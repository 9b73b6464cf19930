"""Grad-CAM (Selvaraju et al. 2017): where a CNN's last convolutional stage looked for a class.

For a target output k and the feature map A (B, *spatial, C) of a layer, the channel weights are
the spatial mean of d logit_k / dA, and the map is ReLU(sum_c w_c A_c), resized to the input's
spatial size and scaled to [0, 1] per record. The gradient is taken by adding a zero tensor to
the layer's output through `flax.linen.intercept_methods`, so any model works unchanged (no
extra collection, nothing stored in its parameters): EIANet's ResNet-50, a ResNet1D, Net1D.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Path = tuple[str, ...]


def _first(out: Any) -> Any:
  return out[0] if isinstance(out, tuple) else out


def _calls(model: nn.Module, variables: Any, x: jax.Array) -> list[tuple[Path, tuple]]:
  """(module path, output shape) of every module call of one forward pass, in call order."""
  calls: list[tuple[Path, tuple]] = []

  def record(next_fun, args, kwargs, ctx):
    out = next_fun(*args, **kwargs)
    first = _first(out)
    if ctx.method_name == "__call__" and hasattr(first, "shape"):
      calls.append((tuple(ctx.module.path), tuple(first.shape)))
    return out

  def run(v, x):
    with nn.intercept_methods(record):
      return model.apply(v, x)

  jax.eval_shape(run, variables, x)
  return calls


def feature_layer(model: nn.Module, variables: Any, x: jax.Array) -> Path:
  """The last module whose output is a feature map of the input's rank (B, *spatial, C):
  the last convolutional stage (after EIANet's last attention gate when it has one)."""
  rank = x.ndim
  maps = [(p, s) for p, s in _calls(model, variables, x)
          if len(s) == rank and p and not p[-1].startswith(("head", "stem"))]
  if not maps:
    raise ValueError(f"{type(model).__name__} has no layer with a (B, *spatial, C) output")
  last = max(len(p) for p, _ in maps)  # innermost modules: blocks, not the whole body
  return [p for p, _ in maps if len(p) >= last - 1][-1]


def gradcam(model: nn.Module, variables: Any, x: jax.Array, target: int, *,
            layer: Path | None = None) -> np.ndarray:
  """Grad-CAM of output `target` for inputs x: (B, H, W, C) images -> (B, H, W); (B, leads, T)
  signals -> (B, T). Values in [0, 1] per record (0 everywhere when nothing is positive)."""
  x = jnp.asarray(x, jnp.float32)
  layer = tuple(layer) if layer is not None else feature_layer(model, variables, x)
  shape = dict(_calls(model, variables, x)).get(layer)
  if shape is None:
    raise ValueError(f"no module at {'/'.join(layer)}")

  @jax.jit
  def run(variables, x):
    def score(delta):
      seen = {}

      def add(next_fun, args, kwargs, ctx):
        out = next_fun(*args, **kwargs)
        if ctx.method_name == "__call__" and tuple(ctx.module.path) == layer:
          a = _first(out) + delta.astype(_first(out).dtype)
          seen["a"] = a
          out = (a,) + tuple(out[1:]) if isinstance(out, tuple) else a
        return out

      with nn.intercept_methods(add):
        out = model.apply(variables, x)
      logits = _first(out)
      return jnp.sum(logits[:, target].astype(jnp.float32)), seen["a"]

    grads, a = jax.grad(score, has_aux=True)(jnp.zeros(shape, jnp.float32))
    spatial = tuple(range(1, a.ndim - 1))
    weights = grads.mean(spatial)  # (B, C)
    cam = jax.nn.relu(jnp.einsum("b...c,bc->b...", a.astype(jnp.float32), weights))
    size = x.shape[1:3] if x.ndim == 4 else (x.shape[-1],)
    cam = jax.image.resize(cam, (cam.shape[0],) + tuple(size), "linear")
    peak = cam.reshape(cam.shape[0], -1).max(1)
    return cam / jnp.where(peak > 0, peak, 1.0).reshape((-1,) + (1,) * len(size))

  return np.asarray(run(variables, x))


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
  """The map over the picture (jet colours, `alpha` opaque): uint8 (H, W, 3)."""
  from matplotlib import colormaps  # pylint: disable=g-import-not-at-top
  img = np.asarray(image, np.float32)
  img = img if img.ndim == 3 else img[..., None]
  if img.max() > 1.0:
    img = img / 255.0
  rgb = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img[..., :3]
  heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
  return np.round(255 * ((1 - alpha) * rgb + alpha * heat)).astype(np.uint8)


def thresholded(image: np.ndarray, cam: np.ndarray, threshold: float = 0.4) -> np.ndarray:
  """The picture where the map exceeds `threshold` (EIANet's figures: > 0.4), faded elsewhere:
  uint8 (H, W, 3)."""
  img = np.asarray(image, np.float32)
  img = img if img.ndim == 3 else img[..., None]
  if img.max() > 1.0:
    img = img / 255.0
  rgb = np.repeat(img, 3, -1) if img.shape[-1] == 1 else img[..., :3]
  keep = (np.asarray(cam) > threshold)[..., None]
  faded = 0.85 + 0.15 * rgb
  red = np.where(rgb < 0.5, np.array([0.8, 0.0, 0.0]), rgb)
  return np.round(255 * np.where(keep, red, faded)).astype(np.uint8)
