"""Dense and grouped 1-D convolution layers whose backward passes suit XLA:CPU.

nn.Dense's and nn.Conv's parameters and float32 forward arithmetic, bit for bit; what differs
is how the gradients (and low-precision products) are computed on a CPU, where XLA's defaults
are slow: bf16 dots with bf16 results miss the matrix unit, and grouped convolutions' kernel
gradients become base-dilated convolutions. Other backends keep autodiff's programs.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = Any

dense_kernel_init = nn.initializers.xavier_uniform()

_LOW_PRECISION = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _dot_f32(a: jax.Array, b: jax.Array, dims: tuple) -> jax.Array:
  return jax.lax.dot_general(a, b, (dims, ((), ())), preferred_element_type=jnp.float32)


def _low_dot(a: jax.Array, b: jax.Array, dims: tuple) -> jax.Array:
  """A low-precision dot with a low-precision result: summed in float32 explicitly on a CPU
  (the only way XLA:CPU puts it on the matrix unit), left to the backend elsewhere (GPUs and
  TPUs sum bf16 products in float32 inside the kernel; a float32 result would only double
  the bytes written)."""
  return jax.lax.platform_dependent(
      a, b, cpu=lambda a, b: _dot_f32(a, b, dims).astype(a.dtype),
      default=lambda a, b: jax.lax.dot_general(a, b, (dims, ((), ()))))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def dense_f32_acc(x: jax.Array, kernel: jax.Array, bias: jax.Array, dtype: Any) -> jax.Array:
  """x (..., k) @ kernel (k, n) + bias in the low-precision `dtype`, products summed in float32.

  Why not nn.Dense in bfloat16: on XLA:CPU a bfloat16 dot whose result type is bfloat16 runs
  on the generic path (0.26 TFLOP/s on an AMX Xeon, below its float32 rate), while asked for
  a float32 result it runs on the matrix unit (1.4-1.6 TFLOP/s); autodiff's transposed dots
  would drop that request, so the backward pass asks for it again (_low_dot). The bias and
  its gradient stay float32 (a bfloat16 sum over tokens becomes XLA's slow tree reduction),
  and the float32 kernel gets a float32 gradient (no bfloat16 rounding of it).
  """
  return _dense_fwd(x, kernel, bias, dtype)[0]


def _dense_fwd(x, kernel, bias, dtype):
  low = kernel.astype(dtype)
  xl = x.astype(dtype)
  y = jax.lax.platform_dependent(
      xl, low, bias,
      cpu=lambda x, k, b: (_dot_f32(x, k, ((x.ndim - 1,), (0,))) + b).astype(dtype),
      default=lambda x, k, b: jax.lax.dot_general(x, k, (((x.ndim - 1,), (0,)), ((), ())))
      + b.astype(dtype))
  return y, (x, low)


def _dense_bwd(dtype, res, g):
  # The low-precision kernel is kept rather than cast again: a second cast of every kernel
  # per step costs more time (~0.1 s at B/75 on a 2-core CPU) than its memory is worth.
  x, low = res
  g = g.astype(dtype)
  dx = _low_dot(g, low, ((g.ndim - 1,), (1,))).astype(x.dtype)
  lead = tuple(range(x.ndim - 1))
  d_kernel = _dot_f32(x.astype(dtype), g, (lead, lead))
  d_bias = g.astype(jnp.float32).sum(lead)
  return dx, d_kernel, d_bias


dense_f32_acc.defvjp(_dense_fwd, _dense_bwd)


class Dense(nn.Module):
  """nn.Dense's parameters (`kernel` (in, out), `bias`, float32) and, in float32, its exact
  operations; in bfloat16/float16 the product is summed in float32 (dense_f32_acc)."""
  features: int
  dtype: Dtype = jnp.float32
  kernel_init: Any = dense_kernel_init
  bias_init: Any = nn.initializers.zeros

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32)
    if jnp.dtype(self.dtype) in _LOW_PRECISION:
      return dense_f32_acc(x, kernel, bias, jnp.dtype(self.dtype))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = jax.lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))
    return y + jnp.reshape(bias, (1,) * (y.ndim - 1) + (-1,))


def grouped_conv_kernel_grad(x: jax.Array, g: jax.Array, kernel: int, stride: int,
                             padding: tuple[int, int], groups: int) -> jax.Array:
  """d loss / d w (WIO: (kernel, in/groups, out), float32) of a grouped 1-D convolution of x
  (B, T, C) whose output gradient is g (B, T_out, out), one batched matmul per kernel tap:
  dW[k, i, o] = sum over (b, t) of x_padded[b, stride t + k, group(o) i] g[b, t, o].

  Why: XLA:CPU lowers the kernel gradient of a grouped convolution to a base-dilated
  convolution that runs 5-30x slower than the forward pass (ECG-FM's 128-tap positional
  convolution: 5.3 of a 10.7 s step; Net1D's 16-tap groups of 16 channels: 0.13-0.5 s per
  layer at ECGFounder's widths, where this takes 0.01-0.09 s).
  """
  b, t_out, out = g.shape
  cg = x.shape[-1] // groups
  xp = jnp.pad(x, ((0, 0), padding, (0, 0)))
  need = stride * t_out + kernel
  if xp.shape[1] < need:  # room for every tap's strided window (the tail is never read)
    xp = jnp.pad(xp, ((0, 0), (0, need - xp.shape[1]), (0, 0)))
  gg = g.reshape(b * t_out, groups, out // groups)

  def tap(_, k):
    xs = jax.lax.dynamic_slice_in_dim(xp, k, stride * t_out, axis=1)
    if stride > 1:
      xs = xs.reshape(b, t_out, stride, xs.shape[-1])[:, :, 0]
    xs = xs.reshape(b * t_out, groups, cg)
    return None, jnp.einsum("ngi,ngo->gio", xs, gg, preferred_element_type=jnp.float32)

  _, per_tap = jax.lax.scan(tap, None, jnp.arange(kernel))  # (kernel, groups, in/g, out/g)
  return per_tap.transpose(0, 2, 1, 3).reshape(kernel, cg, out)


_CONV_DN = ("NWC", "WIO", "NWC")
# Below this many groups XLA:CPU's own kernel gradient is as fast or faster (Net1D's first
# stage, 4 groups over 2,500 steps: 0.037 s vs 0.066 s by taps).
_TAPS_MIN_GROUPS = 8


def _conv(x, w, stride, padding, groups):
  return jax.lax.conv_general_dilated(x, w, (stride,), [padding], dimension_numbers=_CONV_DN,
                                      feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def grouped_conv1d(x: jax.Array, w: jax.Array, stride: int, padding: tuple[int, int],
                   groups: int, dtype: Any) -> jax.Array:
  """x (B, T, C) conv w (WIO, float32) in `dtype`, as nn.Conv computes it, with the kernel
  gradient by taps (grouped_conv_kernel_grad) on a CPU when there are enough groups."""
  return _conv(x.astype(dtype), w.astype(dtype), stride, padding, groups)


def _gconv_fwd(x, w, stride, padding, groups, dtype):
  return grouped_conv1d(x, w, stride, padding, groups, dtype), (x, w)


def _gconv_bwd(stride, padding, groups, dtype, res, g):
  x, w = res
  xl, wl, g = x.astype(dtype), w.astype(dtype), g.astype(dtype)
  dx = jax.vjp(lambda x: _conv(x, wl, stride, padding, groups), xl)[1](g)[0].astype(x.dtype)

  def autodiff(x, g):
    return jax.vjp(lambda w: _conv(x, w, stride, padding, groups), wl)[1](g)[0].astype(
        jnp.float32)

  if groups >= _TAPS_MIN_GROUPS:
    dw = jax.lax.platform_dependent(
        xl, g, default=autodiff, cpu=lambda x, g: grouped_conv_kernel_grad(
            x, g, w.shape[0], stride, padding, groups))
  else:
    dw = autodiff(xl, g)
  return dx, dw.astype(w.dtype)


grouped_conv1d.defvjp(_gconv_fwd, _gconv_bwd)


class GroupedConv1D(nn.Module):
  """nn.Conv's 1-D grouped convolution (params `kernel` (K, in/groups, out) and `bias`,
  float32; the same forward) with grouped_conv1d's backward pass."""
  features: int
  kernel: int
  stride: int = 1
  padding: tuple[int, int] = (0, 0)
  groups: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    shape = (self.kernel, x.shape[-1] // self.groups, self.features)
    w = self.param("kernel", nn.initializers.lecun_normal(), shape, jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    y = grouped_conv1d(x, w, self.stride, tuple(self.padding), self.groups,
                       jnp.dtype(self.dtype))
    return y + bias.astype(y.dtype).reshape((1,) * (y.ndim - 1) + (-1,))
