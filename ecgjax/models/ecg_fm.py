"""ECG-FM (wav2vec 2.0 over 12-lead ECG): conv feature extractor + post-LN transformer.

Implemented from SPEC.md section 2. Parameter names follow the fairseq-signals checkpoint keys
(`feature_extractor`, `layer_norm`, `post_extract_proj`, `conv_pos/{v,g,bias}`,
`encoder_layer_norm`, `layers_{i}/self_attn/{q,k,v,out}_proj`, `mask_emb`, `quantizer/{vars,
weight_proj}`, `project_q`, `final_proj`) and the weight-norm tensors keep torch's layout, so a
checkpoint maps 1:1.
"""

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.models import layers
from ecgjax.errors import ConfigError

Dtype = layers.Dtype

# name -> encoder size fields; "mu" is a tiny size for tests.
_VARIANTS: dict[str, dict[str, int]] = {
    "base": dict(width=768, depth=12, num_heads=12, mlp_dim=3072, conv_channels=256,
                 conv_pos_kernel=128, conv_pos_groups=16, final_dim=256),
    "small": dict(width=768, depth=8, num_heads=12, mlp_dim=3072, conv_channels=256,
                  conv_pos_kernel=128, conv_pos_groups=16, final_dim=256),
    "mu": dict(width=64, depth=2, num_heads=2, mlp_dim=128, conv_channels=32,
               conv_pos_kernel=16, conv_pos_groups=4, final_dim=32),
}
_ENCODER_ONLY = ("final_dim",)  # sizes of the pretraining heads, not encoder fields

# BERT-style init of the transformer's Linear layers (fairseq's init_bert_params).
bert_init = nn.initializers.normal(stddev=0.02)
# torch.nn.init.kaiming_normal_: fan_in, gain sqrt(2), untruncated (Flax's he_normal truncates).
kaiming_normal = nn.initializers.variance_scaling(2.0, "fan_in", "normal")
# torch.nn.Linear's default weight init, U(+-1/sqrt(fan_in)), for the heads outside the encoder.
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def decode_variant(variant: str) -> dict[str, int]:
  """"base" | "small" | "mu" -> ECGFM size fields."""
  if variant not in _VARIANTS:
    raise ConfigError(f"unknown ECG-FM variant {variant!r}; known: {', '.join(_VARIANTS)}")
  return dict(_VARIANTS[variant])


def encoder_fields(variant: str) -> dict[str, int]:
  """decode_variant without the pretraining-head sizes (fields of ECGFMEncoder)."""
  return {k: v for k, v in decode_variant(variant).items() if k not in _ENCODER_ONLY}


@partial(jax.custom_vjp, nondiff_argnums=(1,))
def scale_grad(x: jax.Array, scale: float) -> jax.Array:
  """Identity forward; multiplies the incoming gradient by `scale` (fairseq's GradMultiply)."""
  return x


def _scale_fwd(x, scale):
  return x, None


def _scale_bwd(scale, _, g):
  return (g * jnp.asarray(scale, g.dtype),)


scale_grad.defvjp(_scale_fwd, _scale_bwd)


def _dense(features: int, name: str, dtype: Dtype, init=bert_init) -> layers.Dense:
  return layers.Dense(features, dtype=dtype, kernel_init=init, name=name)


def weight_norm(v: jax.Array, g: jax.Array) -> jax.Array:
  """w = g * v / ||v||, the norm per kernel tap over the (out, in) axes of a torch (O, I, K) v."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=(0, 1), keepdims=True))
  return g * v / norm


class FeatureExtractor(nn.Module):
  """4 x Conv1d(k=2, s=2, no bias); GroupNorm(C groups) after the first; exact GELU."""
  channels: int = 256
  num_blocks: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """x: (B, T, leads) channels-last -> (B, T / 16, C)."""
    for i in range(self.num_blocks):
      x = nn.Conv(self.channels, (2,), strides=(2,), padding="VALID", use_bias=False,
                  kernel_init=kaiming_normal, dtype=self.dtype, param_dtype=jnp.float32,
                  name=f"conv_{i}")(x)
      if i == 0:
        # One group per channel: a per-channel norm over time (stats in float32).
        x = nn.GroupNorm(num_groups=self.channels, epsilon=layers.LN_EPS, dtype=self.dtype,
                         param_dtype=jnp.float32, use_fast_variance=False,
                         name="group_norm")(x)
      x = nn.gelu(x, approximate=False)
    return x


class ConvPositional(nn.Module):
  """Grouped Conv1d with weight norm (per-tap g), 'same' padding minus the last step, GELU."""
  kernel: int = 128
  groups: int = 16
  dropout: float = 0.1  # only sets the init scale, as in the reference
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    std = (4.0 * (1.0 - self.dropout) / (self.kernel * d)) ** 0.5
    v = self.param("v", nn.initializers.normal(std), (d, d // self.groups, self.kernel))
    # g starts at ||v|| so the initial weight equals v (torch's weight_norm does the same).
    g = self.param("g", lambda _, shape: jnp.sqrt(
        jnp.sum(jnp.square(v), axis=(0, 1), keepdims=True)).reshape(shape), (1, 1, self.kernel))
    bias = self.param("bias", nn.initializers.zeros, (d,))
    pad = self.kernel // 2
    # torch's (out, in/groups, taps) kernel as WIO; the forward is the same convolution bit for
    # bit, and layers.grouped_conv1d computes its kernel gradient tap by tap on a CPU (XLA:CPU's
    # own took 5.3-5.6 s of ECG-FM base's 10.7 s bf16 step at batch 8).
    y = layers.grouped_conv1d(x, weight_norm(v, g).transpose(2, 1, 0), 1, (pad, pad),
                              self.groups, jnp.dtype(self.dtype))
    if self.kernel % 2 == 0:  # even kernel with k/2 padding yields T + 1 steps: drop the last
      y = y[:, :-1]
    return nn.gelu(y + bias.astype(self.dtype), approximate=False)


class SelfAttention(nn.Module):
  """Multi-head self-attention with separate q/k/v/out projections (fairseq layout)."""
  num_heads: int
  attention_dropout: float = 0.1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    b, n, d = x.shape
    h = self.num_heads
    hd = d // h
    q = _dense(d, "q_proj", self.dtype)(x) * jnp.asarray(hd ** -0.5, x.dtype)
    k = _dense(d, "k_proj", self.dtype)(x)
    v = _dense(d, "v_proj", self.dtype)(x)
    q, k, v = (t.reshape(b, n, h, hd) for t in (q, k, v))
    dropout = train and self.attention_dropout > 0
    if dropout or self.is_mutable_collection("intermediates"):
      # Dropout on the weights (pretraining) and attention rollout (ecgjax.explain, which
      # sows the head-averaged weights) need them written out; the fused path has neither.
      weights = layers.attention_weights(q, k)
      if self.is_mutable_collection("intermediates"):
        self.sow("intermediates", "attention", weights.mean(1))
      weights = nn.Dropout(self.attention_dropout)(weights.astype(v.dtype),
                                                   deterministic=not train)
      out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    else:
      out = layers.attend(q, k, v)
    return _dense(d, "out_proj", self.dtype)(out.reshape(b, n, d))


class PostLNLayer(nn.Module):
  """Post-LN layer: x = LN(x + Attn(x)); x = LN(x + FFN(x))."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.1
  attention_dropout: float = 0.1
  activation_dropout: float = 0.0
  dtype: Dtype = jnp.float32
  remat: str = "none"  # "full": the attention is a region of its own (layers.REMAT)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    x = layers.backward_fusion_barrier(x)
    drop = lambda rate, y: nn.Dropout(rate)(y, deterministic=not train)  # noqa: E731
    attn = layers.remat_sublayer(SelfAttention, self.remat, static_argnums=(2,))
    y = attn(self.num_heads, self.attention_dropout, self.dtype, name="self_attn")(x, train)
    x = layers.layer_norm("self_attn_layer_norm", dtype=self.dtype)(x + drop(self.dropout, y))
    y = nn.gelu(_dense(self.mlp_dim, "fc1", self.dtype)(x), approximate=False)
    y = _dense(x.shape[-1], "fc2", self.dtype)(drop(self.activation_dropout, y))
    return layers.layer_norm("final_layer_norm", dtype=self.dtype)(x + drop(self.dropout, y))


class ECGFMEncoder(nn.Module):
  """ECG-FM encoder; (B, leads, samples) -> (pooled embedding, aux)."""
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  conv_channels: int = 256
  conv_pos_kernel: int = 128
  conv_pos_groups: int = 16
  dropout: float = 0.1  # after pos-conv + LN, and on each layer's residual branches
  attention_dropout: float = 0.1
  activation_dropout: float = 0.0
  dropout_input: float = 0.1  # after post_extract_proj
  feature_grad_mult: float = 1.0  # 0.1 in pretraining: damps gradients into the CNN
  # "mean" | "nonzero_mean" (sum over time / count of not-all-zero frames, the fine-tuned
  # classifier's) | "feature_nonzero_mean" (scripts/embs.py: per feature, sum / nonzero count)
  pooling: str = "mean"
  dtype: Dtype = jnp.float32
  remat: str = "none"  # config.remat (layers.REMAT): recomputation in the backward pass

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, lead_idx: jax.Array | None = None,
               mask: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: (B, leads, samples) channels-first like the reference; mask: (B, frames) bool, the
    frames replaced by the learnt mask embedding (pretraining). -> (pooled, aux)."""
    layers.no_lead_idx("ECG-FM", lead_idx)
    if x.ndim != 3:
      raise ValueError(f"ECG-FM expects (batch, leads, samples), got {x.shape}")
    feats = FeatureExtractor(self.conv_channels, dtype=self.dtype, name="feature_extractor")(
        jnp.swapaxes(x, 1, 2).astype(self.dtype))
    if self.feature_grad_mult != 1.0:
      feats = scale_grad(feats, self.feature_grad_mult)
    feats_ln = layers.layer_norm("layer_norm", dtype=self.dtype)(feats)
    x_proj = _dense(self.width, "post_extract_proj", self.dtype, torch_linear_init)(feats_ln)
    h = nn.Dropout(self.dropout_input)(x_proj, deterministic=not train)
    if mask is not None:
      if mask.shape != h.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match frames {h.shape[:2]}")
      # Created only when masking is used, so the plain encoder carries no unused parameter.
      mask_emb = self.param("mask_emb", nn.initializers.uniform(1.0), (self.width,))
      h = jnp.where(mask[..., None], mask_emb.astype(h.dtype), h)
    h = h + ConvPositional(self.conv_pos_kernel, self.conv_pos_groups, self.dropout,
                           self.dtype, name="conv_pos")(h)
    h = layers.layer_norm("encoder_layer_norm", dtype=self.dtype)(h)  # before the 1st layer
    h = nn.Dropout(self.dropout)(h, deterministic=not train)
    layer = layers.remat_block(PostLNLayer, self.remat, static_argnums=(2,))
    for i in range(self.depth):
      h = layer(self.num_heads, self.mlp_dim, self.dropout, self.attention_dropout,
                self.activation_dropout, self.dtype, self.remat, name=f"layers_{i}")(h, train)
    pooled = pool(h, self.pooling)
    aux = {"features": feats, "features_ln": feats_ln, "x_proj": x_proj, "hidden": h,
           "tokens": h, "pre_logits": pooled}
    return pooled, aux


POOLINGS = ("mean", "nonzero_mean", "feature_nonzero_mean")


def pool(h: jax.Array, pooling: str) -> jax.Array:
  """(B, T, D) -> (B, D) in float32: plain mean; sum / number of not-all-zero frames; or, as
  ECG-FM's scripts/embs.py, x.sum(time) / (x != 0).sum(time) per feature (0/0 -> 0)."""
  h = h.astype(jnp.float32)
  if pooling == "mean":
    return h.mean(1)
  if pooling == "nonzero_mean":
    count = jnp.any(h != 0, axis=-1).sum(1, keepdims=True)
    return h.sum(1) / jnp.maximum(count, 1).astype(h.dtype)
  if pooling == "feature_nonzero_mean":
    count = (h != 0).sum(1)
    return h.sum(1) / jnp.maximum(count, 1).astype(h.dtype)
  raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")


class GumbelQuantizer(nn.Module):
  """Hard straight-through Gumbel-softmax product quantiser (groups x num_vars codes)."""
  groups: int = 2
  num_vars: int = 320
  vq_dim: int = 256  # total over groups; each group's code has vq_dim // groups values

  @nn.compact
  def __call__(self, x: jax.Array, temperature: jax.Array | float, *,
               train: bool) -> dict[str, jax.Array]:
    """x: (B, T, C) -> dict(x (B, T, vq_dim), logits, codes (B, T, G), one_hot)."""
    g, v = self.groups, self.num_vars
    codebook = self.param("vars", nn.initializers.uniform(1.0), (1, g * v, self.vq_dim // g))
    logits = nn.Dense(g * v, kernel_init=nn.initializers.normal(1.0),
                      bias_init=nn.initializers.zeros, param_dtype=jnp.float32,
                      name="weight_proj")(x.astype(jnp.float32))
    logits = logits.reshape(*x.shape[:-1], g, v)
    codes = jnp.argmax(logits, -1)
    hard = jax.nn.one_hot(codes, v, dtype=jnp.float32)
    if train:
      gumbel = jax.random.gumbel(self.make_rng("gumbel"), logits.shape)
      soft = jax.nn.softmax((logits + gumbel) / temperature, -1)
      codes = jnp.argmax(soft, -1)
      hard = jax.nn.one_hot(codes, v, dtype=jnp.float32)
      # Straight-through: forward value is exactly `hard`, the gradient is soft's.
      one_hot = hard + (soft - jax.lax.stop_gradient(soft))
    else:
      one_hot = hard
    book = codebook.reshape(g, v, -1)
    q = jnp.einsum("...gv,gvd->...gd", one_hot, book).reshape(*x.shape[:-1], -1)
    return {"x": q, "logits": logits, "codes": codes, "one_hot": hard}


class ECGFM(nn.Module):
  """wav2vec 2.0 pretraining model: encoder, mask_emb, quantiser, project_q, final_proj."""
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  conv_channels: int = 256
  conv_pos_kernel: int = 128
  conv_pos_groups: int = 16
  final_dim: int = 256
  latent_groups: int = 2
  latent_vars: int = 320
  dropout: float = 0.1
  attention_dropout: float = 0.1
  activation_dropout: float = 0.0
  dropout_input: float = 0.1
  dropout_features: float = 0.1  # on the quantiser's input (the targets' side)
  feature_grad_mult: float = 0.1
  dtype: Dtype = jnp.float32
  remat: str = "none"  # config.remat, for the encoder's layers

  def encoder_overrides(self) -> dict[str, Any]:
    """ECGFMEncoder fields that differ from `decode_variant` defaults (none for now)."""
    return {}

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array, temperature: jax.Array | float = 2.0, *,
               train: bool = False) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """x: (B, leads, samples), mask: (B, T) -> (per-frame predictions, targets and codes;
    aux: the CNN features, the transformer output and its time mean, `pre_logits`)."""
    encoder = ECGFMEncoder(
        self.width, self.depth, self.num_heads, self.mlp_dim, self.conv_channels,
        self.conv_pos_kernel, self.conv_pos_groups, self.dropout, self.attention_dropout,
        self.activation_dropout, self.dropout_input, self.feature_grad_mult, dtype=self.dtype,
        remat=self.remat, name="encoder")
    pooled, aux = encoder(x, mask=mask, train=train)
    unmasked = nn.Dropout(self.dropout_features)(aux["features_ln"], deterministic=not train)
    quant = GumbelQuantizer(self.latent_groups, self.latent_vars, self.final_dim,
                            name="quantizer")(unmasked, temperature, train=train)
    targets = _dense(self.final_dim, "project_q", jnp.float32, torch_linear_init)(quant["x"])
    preds = _dense(self.final_dim, "final_proj", jnp.float32, torch_linear_init)(
        aux["hidden"].astype(jnp.float32))
    out = {"preds": preds, "targets": targets, "codes": quant["codes"],
           "code_logits": quant["logits"], "code_one_hot": quant["one_hot"]}
    return out, {"features": aux["features"], "hidden": aux["hidden"], "pre_logits": pooled}
