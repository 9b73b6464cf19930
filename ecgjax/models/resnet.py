"""ResNets: 1-D (18/34/50) on ECG signals, 2-D ResNet-50 with EIANet's spatial attention.

The 2-D network is torchvision's ResNet (v1.5: the stride sits on the 3x3 conv of a bottleneck):
conv 7x7/2 -> BN -> ReLU -> max-pool 3x3/2 -> 4 stages -> global mean -> Dense. With attention off
and 1000 classes it has torchvision's 25,557,032 parameters (tested).

The 1-D network is the same topology with 1-D kernels, the convention of the PTB-XL ResNet
baselines: stem conv k=15 stride 2 (pad 7), max-pool k=3 stride 2 (pad 1), k=7 wherever the 2-D
net has 3x3 (pad 3), k=1 for 1x1; widths 64/128/256/512 (x4 for bottlenecks). Kernels grow
because an ECG at 500 Hz needs a wider receptive field per layer than a 224-pixel image.

EIANet (SPEC.md section 6): a CBAM-style spatial-attention block after each of the 4 stages:
[channel mean, channel max] -> conv 7x7 (2 -> 1, no bias) -> sigmoid -> multiply. The paper does
not pin the details; we use the common bias-free conv without BN, mean map first.
`attention_residual=True` applies each gate as x * (1 + a) instead (Wang et al.'s attention
residual learning, Residual Attention Network, CVPR 2017): stacked multiplicative masks in
(0, 1) can shut a whole stage's output, and a trained-from-scratch EIANet does exactly that at
CPU size (README, ECG printouts); with 1 + a the identity always passes.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from ecgjax.errors import ConfigError
from ecgjax.models import layers

Dtype = Any

BN_EPS = 1e-5
BN_MOMENTUM = 0.9  # torch momentum 0.1 weights the new value; Flax's weights the old one

# torchvision's init: He normal over fan_out for convs.
conv_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")

_DEPTHS: dict[str, dict[str, Any]] = {
    "18": dict(block="basic", stage_sizes=(2, 2, 2, 2)),
    "34": dict(block="basic", stage_sizes=(3, 4, 6, 3)),
    "50": dict(block="bottleneck", stage_sizes=(3, 4, 6, 3)),
}
# "mu": a tiny size for tests, both block kinds reachable via overrides.
_MU = dict(block="bottleneck", stage_sizes=(1, 1, 1, 1), width=8)
_1D_VARIANTS = {f"resnet1d{d}": dict(cfg) for d, cfg in _DEPTHS.items()} | {"mu": dict(_MU)}
_2D_VARIANTS = {"resnet2d50": dict(_DEPTHS["50"]),
                "resnet2d50_sa": dict(_DEPTHS["50"], spatial_attention=True),
                "resnet2d18": dict(_DEPTHS["18"]),
                "mu": dict(_MU, spatial_attention=True)}


def decode_variant(variant: str, ndim: int) -> dict[str, Any]:
  """"resnet1d18|34|50" / "resnet2d50[_sa]" / "mu" -> ResNet1D or ResNet2D fields."""
  table = _1D_VARIANTS if ndim == 1 else _2D_VARIANTS
  if variant not in table:
    raise ConfigError(f"unknown {ndim}-D ResNet variant {variant!r}; known: {', '.join(table)}")
  return dict(table[variant])


def _conv(features: int, kernel: int, ndim: int, stride: int, name: str,
          dtype: Dtype) -> nn.Conv:
  """Bias-free conv with torch-style symmetric padding k // 2 on every spatial axis."""
  return nn.Conv(features, (kernel,) * ndim, strides=(stride,) * ndim,
                 padding=[(kernel // 2, kernel // 2)] * ndim, use_bias=False,
                 kernel_init=conv_init, dtype=dtype, param_dtype=jnp.float32, name=name)


def _bn(train: bool, name: str, dtype: Dtype) -> nn.BatchNorm:
  return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM, epsilon=BN_EPS,
                      use_fast_variance=False, dtype=dtype,
                      param_dtype=jnp.float32, name=name)


class SpatialAttention(nn.Module):
  """CBAM spatial gate on channels-last maps: returns (x * a, a) with a in (0, 1), 1 channel."""
  kernel: int = 7
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    ndim = x.ndim - 2
    maps = jnp.concatenate([jnp.mean(x, axis=-1, keepdims=True),
                            jnp.max(x, axis=-1, keepdims=True)], axis=-1)
    a = nn.sigmoid(_conv(1, self.kernel, ndim, 1, "conv", self.dtype)(maps))
    return x * a, a


class BasicBlock(nn.Module):
  """k -> BN -> ReLU -> k -> BN, plus identity or 1x1 projection; ReLU."""
  features: int
  stride: int
  kernel: int
  ndim: int
  dtype: Dtype = jnp.float32
  expansion = 1

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = _conv(self.features, self.kernel, self.ndim, self.stride, "conv1", self.dtype)(x)
    y = nn.relu(_bn(train, "bn1", self.dtype)(y))
    y = _conv(self.features, self.kernel, self.ndim, 1, "conv2", self.dtype)(y)
    y = _bn(train, "bn2", self.dtype)(y)
    return nn.relu(y + _shortcut(x, self.features, self.stride, self.ndim, train, self.dtype))


class Bottleneck(nn.Module):
  """1x1 -> BN -> ReLU -> k (stride) -> BN -> ReLU -> 1x1 (x4) -> BN, plus shortcut; ReLU."""
  features: int
  stride: int
  kernel: int
  ndim: int
  dtype: Dtype = jnp.float32
  expansion = 4

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    y = _conv(self.features, 1, self.ndim, 1, "conv1", self.dtype)(x)
    y = nn.relu(_bn(train, "bn1", self.dtype)(y))
    y = _conv(self.features, self.kernel, self.ndim, self.stride, "conv2", self.dtype)(y)
    y = nn.relu(_bn(train, "bn2", self.dtype)(y))
    y = _conv(4 * self.features, 1, self.ndim, 1, "conv3", self.dtype)(y)
    y = _bn(train, "bn3", self.dtype)(y)
    return nn.relu(y + _shortcut(x, 4 * self.features, self.stride, self.ndim, train,
                                 self.dtype))


def _shortcut(x: jax.Array, features: int, stride: int, ndim: int, train: bool,
              dtype: Dtype) -> jax.Array:
  """Identity, or 1x1 conv (stride) + BN when the shape changes (torchvision's `downsample`)."""
  if stride == 1 and x.shape[-1] == features:
    return x
  x = _conv(features, 1, ndim, stride, "proj_conv", dtype)(x)
  return _bn(train, "proj_bn", dtype)(x)


class ResNetBody(nn.Module):
  """Channels-last ResNet (B, *spatial, C) -> (logits, aux); shared by the 1-D and 2-D nets."""
  stage_sizes: Sequence[int]
  block: str  # "basic" | "bottleneck"
  ndim: int
  stem_kernel: int
  kernel: int
  num_classes: int = 1  # 0: no head, the pooled features are the output
  width: int = 64
  spatial_attention: bool = False  # EIANet: a spatial gate after each of the first 4 stages
  attention_kernel: int = 7
  attention_residual: bool = False  # gate as x * (1 + a) (module docstring)
  dtype: Dtype = jnp.float32
  remat: str = "none"  # config.remat (layers.REMAT): each residual block a region

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False) -> tuple[jax.Array, dict[str, Any]]:
    block_cls = layers.remat_block({"basic": BasicBlock, "bottleneck": Bottleneck}[self.block],
                                   self.remat, static_argnums=(2,))
    x = x.astype(self.dtype)
    x = _conv(self.width, self.stem_kernel, self.ndim, 2, "stem_conv", self.dtype)(x)
    x = nn.relu(_bn(train, "stem_bn", self.dtype)(x))
    # Padding with -inf (Flax's default) as torch's MaxPool does: after ReLU both give the same.
    x = nn.max_pool(x, (3,) * self.ndim, strides=(2,) * self.ndim, padding=[(1, 1)] * self.ndim)
    maps = []
    for s, n in enumerate(self.stage_sizes):
      for b in range(n):
        x = block_cls(self.width * 2 ** s, 2 if (b == 0 and s > 0) else 1, self.kernel,
                      self.ndim, dtype=self.dtype, name=f"stage{s}_block{b}")(x, train)
      if self.spatial_attention and s < 4:
        gated, a = SpatialAttention(self.attention_kernel, self.dtype, name=f"attention{s}")(x)
        x = x + gated if self.attention_residual else gated
        maps.append(a)
    features = jnp.mean(x.astype(jnp.float32), axis=tuple(range(1, 1 + self.ndim)))
    # tokens: the last stage's map, positions flattened (B, T' or H' W', C).
    aux: dict[str, Any] = {"features": features, "pre_logits": features,
                           "tokens": x.reshape(x.shape[0], -1, x.shape[-1])}
    if maps:
      aux["attention"] = tuple(maps)
    if not self.num_classes:  # an encoder (an export, ImageNet weights): the pooled features
      return features, aux
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      name="head")(features)
    return logits.astype(jnp.float32), aux


class ResNet1D(nn.Module):
  """1-D ResNet on (B, leads, T) ECGs; returns (logits, {"features": (B, C)})."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  num_classes: int = 1
  width: int = 64
  stem_kernel: int = 15
  kernel: int = 7
  spatial_attention: bool = False
  attention_kernel: int = 7
  attention_residual: bool = False
  dtype: Dtype = jnp.float32
  remat: str = "none"  # config.remat (layers.REMAT)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               lead_idx: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    """x: (B, leads, T) -> (logits, aux with the pooled features as pre_logits)."""
    layers.no_lead_idx("ResNet1D", lead_idx)
    x = jnp.swapaxes(x, 1, 2)  # channels-first like the torch references -> channels-last, once
    return ResNetBody(self.stage_sizes, self.block, 1, self.stem_kernel, self.kernel,
                      self.num_classes, self.width, self.spatial_attention,
                      self.attention_kernel, self.attention_residual, self.dtype,
                      self.remat, name="body")(x, train=train)


class ResNet2D(nn.Module):
  """2-D ResNet on (B, H, W, C) images; returns (logits, {"features", ["attention"]})."""
  stage_sizes: Sequence[int] = (3, 4, 6, 3)
  block: str = "bottleneck"
  num_classes: int = 1
  width: int = 64
  stem_kernel: int = 7
  kernel: int = 3
  spatial_attention: bool = False
  attention_kernel: int = 7
  attention_residual: bool = False
  dtype: Dtype = jnp.float32
  remat: str = "none"  # config.remat (layers.REMAT)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               lead_idx: jax.Array | None = None) -> tuple[jax.Array, dict[str, Any]]:
    """x: (B, H, W, C) -> (logits, aux with the pooled features as pre_logits)."""
    layers.no_lead_idx("ResNet2D", lead_idx)
    return ResNetBody(self.stage_sizes, self.block, 2, self.stem_kernel, self.kernel,
                      self.num_classes, self.width, self.spatial_attention,
                      self.attention_kernel, self.attention_residual, self.dtype,
                      self.remat, name="body")(x, train=train)
