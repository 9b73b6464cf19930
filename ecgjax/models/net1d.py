"""Net1D: the ECGFounder backbone (AnyECG-CCTA fine-tunes it), implemented from SPEC.md section 3.

A 1-D pre-activation bottleneck ResNet with grouped convolutions, squeeze-excite and a
parameter-free shortcut (zero-padded max-pool, zero channel padding). Input is (B, leads, T)
channels-first like the reference; everything inside is channels-last (B, T, C).

Departures from the reference, on purpose: only the modules that are applied are created, so
with BN off there are no BatchNorm parameters and the network's very first block has no bn1
(see `interop.net1d`, which reports those reference keys as unused). In training, Flax's
BatchNorm tracks the biased batch variance where torch tracks the unbiased one; eval is exact.
"""

from collections.abc import Sequence
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from ecgjax.errors import ConfigError
from ecgjax.models import layers

Dtype = Any

# torch BatchNorm1d defaults: eps 1e-5, momentum 0.1 (torch weights the NEW value by momentum;
# Flax weights the OLD one, hence 0.9).
BN_EPS = 1e-5
BN_MOMENTUM = 0.9

# name -> architecture fields; "mu" is the golden tiny configuration (golden/net1d_tiny_*.json).
_VARIANTS: dict[str, dict[str, Any]] = {
    "ecgfounder": dict(stem_filters=64, filters=(64, 160, 160, 400, 400, 1024, 1024),
                       blocks=(2, 2, 2, 3, 3, 4, 4), num_classes=150),
    "8m": dict(stem_filters=32, filters=(32, 64, 64, 160, 160, 512, 512),
               blocks=(2, 2, 2, 3, 3, 4, 4), num_classes=150),
    "mu": dict(stem_filters=16, filters=(16, 32, 32, 64), blocks=(2, 2, 2, 2), num_classes=5),
}


def decode_variant(variant: str) -> dict[str, Any]:
  """"ecgfounder" | "8m" | "mu" -> Net1D architecture fields."""
  if variant not in _VARIANTS:
    raise ConfigError(f"unknown Net1D variant {variant!r}; known: {', '.join(_VARIANTS)}")
  return dict(_VARIANTS[variant])


def same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF-style SAME (left, right) padding; an odd total puts the extra element on the right."""
  total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
  return total // 2, total - total // 2


def length_trace(seq_len: int, num_stages: int, stride: int = 2) -> list[int]:
  """Time lengths after the stem and after each stage (each stage downsamples once)."""
  lengths = [math.ceil(seq_len / 2)]
  for _ in range(num_stages):
    lengths.append(math.ceil(lengths[-1] / stride))
  return lengths


def max_pool_zero_same(x: jax.Array, stride: int) -> jax.Array:
  """Max-pool over time (B, T, C) with kernel = stride, SAME, padded with zeros.

  The reference pads with 0 rather than -inf, so a trailing window of negative values pools to 0
  on odd lengths; matching that is what makes the shortcut exact.
  """
  left, right = same_padding(x.shape[1], stride, stride)
  x = jnp.pad(x, ((0, 0), (left, right), (0, 0)))
  return nn.max_pool(x, (stride,), strides=(stride,), padding="VALID")


def pad_channels(x: jax.Array, out_channels: int) -> jax.Array:
  """Zero-pad the channel axis to `out_channels`, half before and the rest after."""
  extra = out_channels - x.shape[-1]
  if extra < 0:
    raise ValueError(f"cannot shrink {x.shape[-1]} channels to {out_channels} without projection")
  return jnp.pad(x, ((0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class SameConv(nn.Module):
  """Conv1d over (B, T, C) with TF-style SAME padding computed from the actual length."""
  features: int
  kernel: int
  stride: int = 1
  groups: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    pad = same_padding(x.shape[1], self.kernel, self.stride)
    if self.groups > 1:  # nn.Conv's parameters and forward, a faster kernel gradient on CPU
      return layers.GroupedConv1D(self.features, self.kernel, self.stride, pad, self.groups,
                                  dtype=self.dtype, name="conv")(x)
    return nn.Conv(self.features, (self.kernel,), strides=(self.stride,), padding=[pad],
                   dtype=self.dtype, param_dtype=jnp.float32, name="conv")(x)


class Net1DBlock(nn.Module):
  """Pre-activation bottleneck: 1x1 -> grouped k x 1 (stride) -> 1x1, squeeze-excite, shortcut."""
  out_channels: int
  mid_channels: int
  kernel: int
  stride: int
  groups: int
  first_of_network: bool  # skips the first BN/activation (the stem just applied them)
  use_bn: bool
  use_dropout: bool
  dropout_rate: float
  dtype: Dtype = jnp.float32

  def _pre(self, x: jax.Array, name: str, train: bool) -> jax.Array:
    """[BN] -> Swish -> [Dropout]."""
    if self.use_bn:
      x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                       use_fast_variance=False, dtype=self.dtype, param_dtype=jnp.float32,
                       name=name)(x)
    x = nn.swish(x)
    if self.use_dropout:
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return x

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = x if self.first_of_network else self._pre(x, "bn1", train)
    y = SameConv(self.mid_channels, 1, dtype=self.dtype, name="conv1")(y)
    y = self._pre(y, "bn2", train)
    y = SameConv(self.mid_channels, self.kernel, self.stride, self.groups, dtype=self.dtype,
                 name="conv2")(y)
    y = self._pre(y, "bn3", train)
    y = SameConv(self.out_channels, 1, dtype=self.dtype, name="conv3")(y)

    se = jnp.mean(y, axis=1)
    se = nn.swish(nn.Dense(self.out_channels // 2, dtype=self.dtype, name="se_fc1")(se))
    se = nn.sigmoid(nn.Dense(self.out_channels, dtype=self.dtype, name="se_fc2")(se))
    y = y * se[:, None, :]

    shortcut = x
    if self.stride > 1:
      shortcut = max_pool_zero_same(shortcut, self.stride)
    if self.out_channels != x.shape[-1]:
      shortcut = pad_channels(shortcut, self.out_channels)
    return y + shortcut


class Net1D(nn.Module):
  """Net1D on (B, leads, T); returns (logits, {"features": pooled (B, C)}), or with
  num_classes=0 (pooled features, the same aux): the encoder that weight imports export."""
  stem_filters: int = 64
  filters: Sequence[int] = (64, 160, 160, 400, 400, 1024, 1024)
  blocks: Sequence[int] = (2, 2, 2, 3, 3, 4, 4)
  num_classes: int = 150  # 0: no head; the pooled features are the output (an encoder)
  kernel: int = 16
  stride: int = 2  # of the first block of every stage
  groups_width: int = 16  # channels per group of the middle conv
  ratio: float = 1.0  # mid channels = out channels * ratio
  use_bn: bool = False  # ECGFounder: off; AnyECG-CCTA: on
  use_dropout: bool = False  # ECGFounder: off; AnyECG-CCTA: on
  dropout_rate: float = 0.5
  dtype: Dtype = jnp.float32  # compute dtype; params stay float32
  remat: str = "none"  # config.remat (layers.REMAT): each block a region

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               lead_idx: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    """x: (B, leads, T) -> (logits, or the pooled features without a head; aux)."""
    layers.no_lead_idx("Net1D", lead_idx)
    if len(self.filters) != len(self.blocks):
      raise ValueError(f"filters {self.filters} and blocks {self.blocks} differ in length")
    x = jnp.swapaxes(x, 1, 2).astype(self.dtype)  # (B, leads, T) -> (B, T, leads), once
    x = SameConv(self.stem_filters, self.kernel, 2, dtype=self.dtype, name="stem")(x)
    if self.use_bn:
      x = nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                       use_fast_variance=False, dtype=self.dtype, param_dtype=jnp.float32,
                       name="stem_bn")(x)
    x = nn.swish(x)
    self.sow("intermediates", "stem_out", x)
    block = layers.remat_block(Net1DBlock, self.remat, static_argnums=(2,))
    for s, (out, n) in enumerate(zip(self.filters, self.blocks)):
      mid = int(out * self.ratio)
      for b in range(n):
        x = block(out, mid, self.kernel, self.stride if b == 0 else 1,
                       groups=max(mid // self.groups_width, 1),
                       first_of_network=(s == 0 and b == 0), use_bn=self.use_bn,
                       use_dropout=self.use_dropout, dropout_rate=self.dropout_rate,
                       dtype=self.dtype, name=f"stage{s}_block{b}")(x, train)
      self.sow("intermediates", f"stage{s}_out", x)
    features = jnp.mean(x.astype(jnp.float32), axis=1)
    # tokens: the last stage's map (B, T', C), what attention pooling probes read.
    aux = {"features": features, "pre_logits": features, "tokens": x}
    if self.num_classes == 0:
      return features, aux
    logits = nn.Dense(self.num_classes, dtype=self.dtype, name="head")(features)
    return logits.astype(jnp.float32), aux
