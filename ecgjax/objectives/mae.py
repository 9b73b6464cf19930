"""Masked-autoencoder reconstruction losses (pure functions of arrays)."""

import jax
import jax.numpy as jnp

from ecgjax.models.st_mem import patchify


def masked_patch_mse(target: jax.Array, pred: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean over masked patches (mask == 1) of each patch's MSE; float32 scalar."""
  per_patch = jnp.mean(jnp.square(pred.astype(jnp.float32) - target.astype(jnp.float32)), -1)
  mask = mask.astype(jnp.float32)
  # With nothing masked there is nothing to reconstruct: 0 rather than the reference's 0/0 NaN.
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def normalize_patches(patches: jax.Array, eps: float = 1e-6) -> jax.Array:
  """Each patch standardised by its own mean and UNBIASED (ddof=1) variance, as ST-MEM."""
  patches = patches.astype(jnp.float32)
  mean = jnp.mean(patches, axis=-1, keepdims=True)
  var = jnp.var(patches, axis=-1, keepdims=True, ddof=1)  # jnp.var defaults to ddof=0
  return (patches - mean) / jnp.sqrt(var + eps)


def norm_pix_loss(x: jax.Array, pred: jax.Array, mask: jax.Array,
                  patch_size: int) -> jax.Array:
  """ST-MEM loss: MSE to per-patch normalised targets, over masked patches; float32 scalar.

  x: (B, L, T) signal; pred: (B, L, T // patch_size, patch_size); mask: (B, L, n), 1 = masked.
  """
  return masked_patch_mse(normalize_patches(patchify(x, patch_size)), pred, mask)
