"""Shared transformer pieces: sin-cos tables, MLP, fused-qkv attention, pre-LN block.

Conventions match the PyTorch ViTs we port (ST-MEM, ECG-FM): exact (erf) GELU, LayerNorm
eps 1e-5, xavier-uniform Dense kernels with zero biases, head_dim 64. Parameters are always
float32; `dtype` is the compute dtype (e.g. bfloat16); softmax and LayerNorm statistics run in
float32 regardless.
"""

import functools
from typing import Any

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ecgjax.models import linear

Dtype = Any

# torch.nn.LayerNorm's default; Flax defaults to 1e-6, which shifts outputs of near-flat inputs.
LN_EPS = 1e-5

dense_kernel_init = linear.dense_kernel_init
Dense = linear.Dense
GroupedConv1D = linear.GroupedConv1D
grouped_conv1d = linear.grouped_conv1d
grouped_conv_kernel_grad = linear.grouped_conv_kernel_grad
embedding_init = nn.initializers.normal(stddev=0.02)


def sincos_1d(num_positions: int, dim: int, temperature: float = 10000.) -> np.ndarray:
  """Fixed 1-D sin-cos code, (num_positions, dim) float32 as [sin | cos] halves."""
  if dim % 2:
    raise ValueError(f"sin-cos code needs an even dim, got {dim}")
  half = dim // 2
  omega = 1.0 / temperature ** (np.arange(half, dtype=np.float64) / half)
  angles = np.arange(num_positions, dtype=np.float64)[:, None] * omega[None, :]
  return np.concatenate([np.sin(angles), np.cos(angles)], axis=1).astype(np.float32)


def sep_padded_sincos_init(num_patches: int):
  """Initialiser for a (num_patches + 2, dim) table: [0; sincos(num_patches); 0] (SEP rows zero)."""

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    del key  # deterministic table
    if shape[0] != num_patches + 2:
      raise ValueError(f"table shape {shape} does not fit {num_patches} patches + 2 SEP rows")
    table = np.zeros(shape, np.float32)
    table[1:-1] = sincos_1d(num_patches, shape[1])
    return jnp.asarray(table, dtype)

  return init


def _ln_stats(xf: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
  mean = xf.mean(-1, keepdims=True)
  var = jnp.square(xf - mean).mean(-1, keepdims=True)
  return mean, jax.lax.rsqrt(var + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float,
                dtype: Any) -> jax.Array:
  # The same operations in the same order as flax.linen.LayerNorm(use_fast_variance=False),
  # so forward outputs are bit for bit those of Flax (the goldens were checked with it).
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean, rstd = _ln_stats(xf, eps)
  return ((xf - mean) * (rstd * scale) + bias).astype(dtype)


def _layer_norm_fwd(x, scale, bias, eps, dtype):
  xf = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  mean, rstd = _ln_stats(xf, eps)
  y = ((xf - mean) * (rstd * scale) + bias).astype(dtype)
  return y, (x, mean, rstd, scale)


def _layer_norm_bwd(eps, dtype, res, g):
  del eps, dtype
  x, mean, rstd, scale = res
  # Only x and the per-token statistics are kept; x_hat is recomputed here. The barrier ties
  # the recomputation to the gradient so XLA cannot merge it with the forward's and keep the
  # forward's (x - mean) and x_hat buffers alive, as autodiff of the formula does (two extra
  # activation-size buffers per norm).
  x, mean, rstd, g = jax.lax.optimization_barrier((x, mean, rstd, g))
  xf = x.astype(mean.dtype)
  x_hat = (xf - mean) * rstd
  gf = g.astype(mean.dtype)
  lead = tuple(range(x.ndim - 1))
  d_bias = gf.sum(lead)
  d_scale = (gf * x_hat).sum(lead)
  dy = gf * scale
  dx = rstd * (dy - dy.mean(-1, keepdims=True)
               - x_hat * (dy * x_hat).mean(-1, keepdims=True))
  return dx.astype(x.dtype), d_scale.astype(scale.dtype), d_bias.astype(scale.dtype)


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nn.Module):
  """LayerNorm over the last axis (params `scale`, `bias` as Flax's), two-pass variance and
  float32 statistics, with a backward pass that keeps only x, mean and 1/std."""
  epsilon: float = LN_EPS
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    features = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (features,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (features,), jnp.float32)
    return _layer_norm(x, scale, bias, float(self.epsilon), jnp.dtype(self.dtype))


def layer_norm(name: str | None = None, *, epsilon: float = LN_EPS,
               dtype: Dtype = jnp.float32) -> LayerNorm:
  """LayerNorm with torch's eps and two-pass (mean-subtracted) variance, stats in float32."""
  # Two-pass variance: raw ECG patches can carry a large offset relative to their spread, where
  # E[x^2] - E[x]^2 cancels catastrophically; it also tracks torch's numbers more closely.
  return LayerNorm(epsilon=epsilon, dtype=dtype, name=name)


def dense(features: int, name: str | None = None, *, dtype: Dtype = jnp.float32) -> Dense:
  """Dense with xavier-uniform kernel, zero bias and float32 params."""
  return Dense(features, dtype=dtype, name=name)


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327


@jax.custom_vjp
def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU, x * Phi(x), whose backward pass keeps only x."""
  return nn.gelu(x, approximate=False)


def _gelu_fwd(x):
  return gelu(x), x


def _gelu_bwd(x, g):
  # d/dx x*Phi(x) = Phi(x) + x*phi(x), recomputed from x in the backward fusion. Autodiff of
  # the forward formula instead keeps erf and exp intermediates of every MLP hidden layer
  # alive until the backward pass: two extra hidden-size buffers per block (~240 MiB at
  # ST-MEM B/75 batch 8), which is most of what separated our step's memory from torch's.
  # The barrier ties x to the incoming gradient: without it XLA merges this erfc with the
  # forward's (CSE) and keeps the forward's intermediates alive after all.
  x, g = jax.lax.optimization_barrier((x, g))
  xf = x.astype(jnp.float32)
  cdf = 0.5 * jax.lax.erfc(-xf * _SQRT_HALF)
  pdf = _INV_SQRT_2PI * jnp.exp(-0.5 * xf * xf)
  return ((g.astype(jnp.float32) * (cdf + xf * pdf)).astype(g.dtype),)


gelu.defvjp(_gelu_fwd, _gelu_bwd)


class Mlp(nn.Module):
  """Dense -> exact GELU -> Dense."""
  hidden_dim: int
  out_dim: int | None = None  # None: same as the input width
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    out_dim = self.out_dim or x.shape[-1]
    x = dense(self.hidden_dim, "fc1", dtype=self.dtype)(x)
    x = gelu(x)  # the references use erf GELU, Flax defaults to tanh
    return dense(out_dim, "fc2", dtype=self.dtype)(x)


# config.remat: how much of the forward pass the backward pass recomputes (jax.checkpoint).
REMAT = ("none", "block", "dots_saveable", "full")


def check_remat(remat: str) -> None:
  """Raises ConfigError naming config.remat unless it is one of REMAT."""
  if remat not in REMAT:
    from ecgjax.errors import ConfigError  # pylint: disable=g-import-not-at-top
    raise ConfigError(f"config.remat={remat!r}: one of {', '.join(REMAT)}")


def remat_block(cls: type[nn.Module], remat: str, static_argnums: tuple[int, ...] = ()
                ) -> type[nn.Module]:
  """A transformer block or CNN block class as a checkpoint region, per `remat`:
  none: as is (XLA keeps what the backward pass needs); block and full: the backward pass
  recomputes the block from its input (nothing inside saved); dots_saveable: matmul outputs
  saved, only the elementwise work (GELU, norms, softmax) recomputed. static_argnums counts
  self as 0 (a `train` flag after x is 2). Parameter paths do not change."""
  check_remat(remat)
  if remat == "none":
    return cls
  policy = (jax.checkpoint_policies.dots_saveable if remat == "dots_saveable"
            else jax.checkpoint_policies.nothing_saveable)
  return nn.remat(cls, policy=policy, static_argnums=static_argnums)


def remat_sublayer(cls: type[nn.Module], remat: str, static_argnums: tuple[int, ...] = ()
                   ) -> type[nn.Module]:
  """With remat="full", an attention or MLP sub-layer as its own region inside its block's,
  so recomputing a block holds one sub-layer's internals at a time; else `cls` as is."""
  if remat != "full":
    return cls
  return nn.remat(cls, policy=jax.checkpoint_policies.nothing_saveable,
                  static_argnums=static_argnums)


# cuDNN's fused attention takes half-precision inputs whose head dim is a multiple of 8 up to 128.
_CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
_logged: set[tuple[str, str, int, str]] = set()


def attention_implementation(dtype: Any, head_dim: int, platform: str | None = None) -> str:
  """'cudnn' on a GPU when the fused kernel takes these inputs (bf16/fp16, head dim a
  multiple of 8 up to 128), else 'xla'; the choice is logged once per setting."""
  platform = platform or jax.default_backend()
  fits = (jnp.dtype(dtype) in [jnp.dtype(t) for t in _CUDNN_DTYPES]
          and head_dim % 8 == 0 and 8 <= head_dim <= 128)
  impl = "cudnn" if platform in ("gpu", "cuda") and fits else "xla"
  key = (platform, jnp.dtype(dtype).name, int(head_dim), impl)
  if key not in _logged:
    _logged.add(key)
    logging.info("attention: jax.nn.dot_product_attention implementation=%r (%s, %s, head "
                 "dim %d)", impl, platform, jnp.dtype(dtype).name, head_dim)
  return impl


@jax.custom_vjp
def _xla_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation="xla")


def _xla_attention_fwd(q, k, v):
  return _xla_attention(q, k, v), (q, k, v)


def _xla_attention_bwd(res, g):
  # Keeps q, k, v and recomputes the attention weights from them, as fused kernels do:
  # autodiff of XLA's attention keeps logits, weights and their normaliser alive for every
  # layer (three (batch, heads, T, T) buffers). Recomputing q k^T costs under 1% of a ViT
  # block's FLOPs at ECG token counts.
  q, k, v, g = jax.lax.optimization_barrier((*res, g))
  f32 = jnp.float32
  logits = jnp.einsum("btnh,bsnh->bnts", q, k, preferred_element_type=f32)
  probs = jax.nn.softmax(logits, axis=-1)
  gf = g.astype(f32)
  dv = jnp.einsum("bnts,btnh->bsnh", probs, gf)
  dp = jnp.einsum("btnh,bsnh->bnts", gf, v.astype(f32))
  ds = probs * (dp - (dp * probs).sum(-1, keepdims=True))
  dq = jnp.einsum("bnts,bsnh->btnh", ds, k.astype(f32))
  dk = jnp.einsum("bnts,btnh->bsnh", ds, q.astype(f32))
  return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


_xla_attention.defvjp(_xla_attention_fwd, _xla_attention_bwd)


def attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
  """softmax(q k^T) v over (batch, tokens, heads, head_dim) with q already scaled (as the
  reference models scale it), through jax.nn.dot_product_attention: XLA's attention (with a
  backward pass that recomputes the weights instead of storing them), or cuDNN's fused
  kernel on a GPU when it fits. Softmax runs in float32 either way."""
  impl = attention_implementation(q.dtype, q.shape[-1])
  if impl == "xla":
    return _xla_attention(q, k, v)
  return jax.nn.dot_product_attention(q, k, v, scale=1.0, implementation=impl)



def attention_weights(q: jax.Array, k: jax.Array) -> jax.Array:
  """The (batch, heads, q, k) softmax weights, written out (for rollout and for dropout on
  the weights, which the fused path does not have)."""
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  return jax.nn.softmax(logits.astype(jnp.float32), axis=-1)


class MultiHeadAttention(nn.Module):
  """Self-attention over (batch, tokens, width) with one fused qkv projection."""
  num_heads: int
  head_dim: int = 64
  out_dim: int | None = None  # None: same as the input width
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    b, n, d = x.shape
    h, hd = self.num_heads, self.head_dim
    # One (d, 3*h*hd) matmul instead of three; its output columns are laid out (3, h, hd) like
    # torch's `to_qkv(x).chunk(3)` followed by 'b n (h d) -> b h n d', so weights map 1:1.
    qkv = dense(3 * h * hd, "qkv", dtype=self.dtype)(x).reshape(b, n, 3, h, hd)
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    # Scaling q (n*hd values) is cheaper than scaling logits (n*n); for hd=64 the scale is 1/8, a
    # power of two, so the result is bit-identical to torch's scaling of the logits.
    q = q * jnp.asarray(hd ** -0.5, q.dtype)
    if self.is_mutable_collection("intermediates"):
      # Attention rollout (ecgjax.explain) needs the weights: the written-out path, and the
      # head-averaged weights sown, only when asked for.
      weights = attention_weights(q, k)
      self.sow("intermediates", "attention", weights.mean(1))
      out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(v.dtype), v)
    else:
      out = attend(q, k, v)
    return dense(self.out_dim or d, "out", dtype=self.dtype)(out.reshape(b, n, h * hd))


@jax.custom_vjp
def backward_fusion_barrier(x: jax.Array) -> jax.Array:
  """Identity whose gradient is materialised once: stops XLA fusing backward passes across it.

  Without it, XLA:CPU fuses the residual stream's gradient through every block's LayerNorm
  backward into one elementwise chain and duplicates that chain into each block's consumer
  fusion, so the backward pass recomputes it from the top for every layer: a cost quadratic in
  depth (ViT-B/75 step: 0.93 s of 3.05 s). XLA:CPU turns `optimization_barrier` into a mere
  scheduling constraint, so on CPU the gradient goes through a matmul with the identity (exact
  for finite values, ~2 ms per block); other backends keep the plain barrier.
  """
  return x


def _barrier_fwd(x):
  return x, None


def _identity_matmul(g):
  return jnp.einsum("...d,de->...e", g, jnp.eye(g.shape[-1], dtype=g.dtype))


def _barrier_bwd(_, g):
  g = jax.lax.platform_dependent(g, cpu=_identity_matmul, default=jax.lax.optimization_barrier)
  return (g,)


backward_fusion_barrier.defvjp(_barrier_fwd, _barrier_bwd)


class Block(nn.Module):
  """Pre-LN transformer block: x + Attn(LN(x)); x + MLP(LN(x))."""
  num_heads: int
  mlp_dim: int
  head_dim: int = 64
  dtype: Dtype = jnp.float32
  remat: str = "none"  # "full": the attention and the MLP are regions of their own (REMAT)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = backward_fusion_barrier(x)
    y = layer_norm("attn_norm", dtype=self.dtype)(x)
    attn = remat_sublayer(MultiHeadAttention, self.remat)
    x = x + attn(self.num_heads, self.head_dim, dtype=self.dtype, name="attn")(y)
    y = layer_norm("mlp_norm", dtype=self.dtype)(x)
    return x + remat_sublayer(Mlp, self.remat)(self.mlp_dim, dtype=self.dtype, name="mlp")(y)


def block_stack(remat: str) -> type[nn.Module]:
  """The Block class to build a stack with under config.remat (see remat_block)."""
  return remat_block(Block, remat)


def no_lead_idx(name: str, lead_idx: Any) -> None:
  """Encoders without a lead table take leads as input channels in the contract's order;
  they share the encoder signature `(x, *, train, lead_idx)` but refuse a lead_idx."""
  if lead_idx is not None:
    raise ValueError(f"{name} takes leads as input channels in the contract's order and has "
                     "no lead table: lead_idx must be None")
