"""ST-MEM (ICLR 2024): a ViT over per-lead ECG patches, and its lead-wise MAE pretraining model.

Implemented from SPEC.md section 1. Tokens of lead l are [SEP, patch_0..patch_{n-1}, SEP], each
plus its positional row and lead l's embedding; all leads are flattened lead-major into one
sequence. The MAE decoder reconstructs every lead separately with shared blocks.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from ecgjax.models import layers
from ecgjax.errors import ConfigError

Dtype = layers.Dtype

# Regexes over '/'-joined param paths: the fixed sin-cos tables stay frozen in pretraining (the
# downstream encoder then trains its positional table as an ordinary parameter).
FROZEN_IN_PRETRAINING: tuple[str, ...] = (
    r"(^|/)pos_embedding$",
    r"(^|/)decoder_pos_embedding$",
)

# name -> (width, depth, heads); "mu" is a tiny size for tests (head_dim stays 64).
_ENCODERS = {"mu": (64, 1, 1), "S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16)}
_DECODER = dict(decoder_width=256, decoder_depth=4, decoder_heads=4, decoder_mlp_dim=1024)
_DECODER_MU = dict(decoder_width=64, decoder_depth=1, decoder_heads=1, decoder_mlp_dim=256)
_KNOWN = ("mu", "S/75", "B/75", "L/75")


def decode_variant(variant: str) -> dict[str, int]:
  """"B/75" -> STMEM size fields (width, depth, num_heads, mlp_dim, patch_size, decoder_*)."""
  name, _, patch = variant.partition("/")
  if name not in _ENCODERS or (patch and not patch.isdigit()):
    raise ConfigError(f"unknown ST-MEM variant {variant!r}; known: {', '.join(_KNOWN)} "
                     "(any /P with P dividing the input length also works)")
  width, depth, heads = _ENCODERS[name]
  cfg = dict(width=width, depth=depth, num_heads=heads, mlp_dim=4 * width)
  cfg.update(_DECODER_MU if name == "mu" else _DECODER)
  if patch:
    cfg["patch_size"] = int(patch)
  return cfg


def patchify(x: jax.Array, patch_size: int) -> jax.Array:
  """(B, L, T) -> (B, L, T // patch_size, patch_size) non-overlapping patches."""
  *lead, t = x.shape
  if t % patch_size:
    raise ValueError(f"length {t} is not a multiple of the patch size {patch_size}")
  return x.reshape(*lead, t // patch_size, patch_size)


class STMEMEncoder(nn.Module):
  """ST-MEM ViT encoder; returns (pooled embedding, aux) with aux['tokens'] the normed tokens."""
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 75
  seq_len: int = 2250  # 9 s at 250 Hz; longer records are cut into crops of this length
  num_leads: int = 12  # rows of the lead-embedding table (I, II, III, aVR, aVL, aVF, V1..V6)
  head_dim: int = 64
  dtype: Dtype = jnp.float32  # compute dtype; params stay float32
  remat: str = "none"  # config.remat (layers.REMAT): recomputation in the backward pass

  @property
  def num_patches(self) -> int:
    """Patches per lead."""
    return self.seq_len // self.patch_size

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False, lead_idx: jax.Array | None = None,
               keep_idx: jax.Array | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: (B, leads, seq_len); lead_idx: (leads,) canonical indices; keep_idx: (B, leads, k).
    `train` is accepted for the one encoder signature (the ViT has no dropout or BN)."""
    del train
    if x.ndim != 3 or x.shape[-1] != self.seq_len:
      raise ValueError(
          f"ST-MEM expects input (batch, leads, {self.seq_len}), got {x.shape}: the positional "
          f"table covers exactly {self.seq_len} samples, so cut crops of {self.seq_len} samples "
          "(e.g. starts 0/125/250 of a 2500-sample record) and average their outputs")
    if self.seq_len % self.patch_size:
      raise ValueError(f"seq_len {self.seq_len} is not a multiple of patch {self.patch_size}")
    b, n_leads, _ = x.shape
    if lead_idx is None:
      # As the reference: leads given in canonical order starting at lead I. Pass lead_idx for
      # subsets (e.g. [0, 7] for I and V2) so each lead keeps its own embedding.
      if n_leads > self.num_leads:
        raise ValueError(f"{n_leads} leads given but the model has {self.num_leads}")
      lead_idx = jnp.arange(n_leads)
    lead_idx = jnp.asarray(lead_idx)
    if lead_idx.shape != (n_leads,):
      raise ValueError(f"lead_idx must have shape ({n_leads},), got {lead_idx.shape}")
    n, d, dt = self.num_patches, self.width, self.dtype

    # asarray: params loaded from an export are NumPy arrays, which cannot be indexed by tracers.
    pos = jnp.asarray(self.param("pos_embedding", layers.sep_padded_sincos_init(n), (n + 2, d),
                                 jnp.float32))
    sep = jnp.asarray(self.param("sep_embedding", layers.embedding_init, (d,), jnp.float32))
    leads = jnp.asarray(self.param("lead_embedding", layers.embedding_init,
                                   (self.num_leads, d), jnp.float32))

    patches = patchify(x, self.patch_size)
    patch_pos = pos[1:-1]
    if keep_idx is not None:
      # The patch embedding acts per patch, so gathering the raw kept patches first gives the
      # reference's embed-then-mask result while embedding only the visible ones.
      patches = jnp.take_along_axis(patches, keep_idx[..., None], axis=2)
      patch_pos = patch_pos[keep_idx]
    tok = layers.layer_norm("patch_in_norm", dtype=dt)(patches)
    tok = layers.dense(d, "patch_embed", dtype=dt)(tok)
    tok = layers.layer_norm("patch_out_norm", dtype=dt)(tok)
    tok = tok + patch_pos.astype(dt)

    left = jnp.broadcast_to((sep + pos[0]).astype(dt), (b, n_leads, 1, d))
    right = jnp.broadcast_to((sep + pos[-1]).astype(dt), (b, n_leads, 1, d))
    tok = jnp.concatenate([left, tok, right], axis=2)
    tok = tok + leads[lead_idx][None, :, None, :].astype(dt)
    n_tok = tok.shape[2]
    tok = tok.reshape(b, n_leads * n_tok, d)

    block = layers.block_stack(self.remat)
    for i in range(self.depth):
      tok = block(self.num_heads, self.mlp_dim, self.head_dim, dtype=dt, remat=self.remat,
                  name=f"block_{i}")(tok)
    encoded = tok
    norm = layers.layer_norm("norm", dtype=dt)
    tokens = norm(encoded)
    # Downstream pooling: drop SEPs, mean over all lead x patch tokens, then the same final norm.
    pooled = encoded.reshape(b, n_leads, n_tok, d)[:, :, 1:-1].astype(jnp.float32).mean((1, 2))
    embedding = norm(pooled).astype(jnp.float32)
    return embedding, {"tokens": tokens, "encoded": encoded, "pre_logits": embedding}


class STMEM(nn.Module):
  """ST-MEM masked autoencoder: encoder on kept patches, lead-wise decoder predicts all patches."""
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = 75
  seq_len: int = 2250
  num_leads: int = 12
  head_dim: int = 64
  decoder_width: int = 256
  decoder_depth: int = 4
  decoder_heads: int = 4
  decoder_mlp_dim: int = 1024
  mask_ratio: float = 0.75  # fraction of each lead's patches hidden from the encoder
  dtype: Dtype = jnp.float32
  remat: str = "none"  # config.remat, for the encoder's and the decoder's blocks

  @property
  def num_patches(self) -> int:
    """Patches per lead."""
    return self.seq_len // self.patch_size

  @property
  def num_keep(self) -> int:
    """Visible patches per lead: int(n * (1 - mask_ratio)), as the reference."""
    return int(self.num_patches * (1 - self.mask_ratio))

  @nn.nowrap
  def make_encoder(self, name: str | None = None) -> STMEMEncoder:
    """The encoder with this model's sizes (a fresh, unbound module when called outside apply)."""
    return STMEMEncoder(self.width, self.depth, self.num_heads, self.mlp_dim, self.patch_size,
                        self.seq_len, self.num_leads, self.head_dim, self.dtype, self.remat,
                        name=name)

  @nn.compact
  def __call__(self, x: jax.Array, noise: jax.Array, *, lead_idx: jax.Array | None = None
               ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """x: (B, leads, seq_len); noise: (B, leads, n_patches) uniform -> pred (B, leads, n, p)."""
    n, k, dw, dt = self.num_patches, self.num_keep, self.decoder_width, self.dtype
    b, n_leads = x.shape[:2]
    if noise.shape != (b, n_leads, n):
      raise ValueError(f"noise must have shape {(b, n_leads, n)}, got {noise.shape}")
    # Keep the k smallest-noise patches of every (sample, lead), in ascending-noise order: the
    # reference's argsort(noise)[:k]. A stable sort makes ties deterministic.
    keep_idx = jnp.argsort(noise, axis=-1, stable=True)[..., :k]
    keep_1hot = jax.nn.one_hot(keep_idx, n, dtype=jnp.float32)  # (B, L, k, n)
    mask = 1.0 - keep_1hot.sum(axis=2)

    _, enc_aux = self.make_encoder("encoder")(x, lead_idx=lead_idx, keep_idx=keep_idx)
    latent = enc_aux["tokens"]

    mask_token = self.param("mask_embedding", layers.embedding_init, (dw,), jnp.float32)
    dpos = self.param("decoder_pos_embedding", layers.sep_padded_sincos_init(n), (n + 2, dw),
                      jnp.float32)
    h = layers.dense(dw, "decoder_embed", dtype=dt)(latent).reshape(b, n_leads, k + 2, dw)
    # Un-shuffle: put each visible token back at its patch position, the mask token elsewhere.
    # A one-hot matmul is exact (products with 0/1) and is a plain GEMM instead of a scatter.
    full = jnp.einsum("blkn,blkd->blnd", keep_1hot.astype(dt), h[:, :, 1:-1])
    full = full + mask[..., None].astype(dt) * mask_token.astype(dt)
    full = full + dpos[1:-1].astype(dt)
    # The SEP slots carry the encoder's own SEP outputs (projected), plus the zero SEP rows.
    left = h[:, :, :1] + dpos[0].astype(dt)
    right = h[:, :, -1:] + dpos[-1].astype(dt)
    seq = jnp.concatenate([left, full, right], axis=2).reshape(b * n_leads, n + 2, dw)
    # Leads go into the batch axis: every lead is decoded on its own by the same blocks.
    block = layers.block_stack(self.remat)
    for i in range(self.decoder_depth):
      seq = block(self.decoder_heads, self.decoder_mlp_dim, self.head_dim, dtype=dt,
                  remat=self.remat, name=f"decoder_block_{i}")(seq)
    seq = seq.reshape(b, n_leads, n + 2, dw)[:, :, 1:-1]  # SEP outputs are never predicted
    seq = layers.layer_norm("decoder_norm", epsilon=1e-6, dtype=dt)(seq)
    pred = layers.dense(self.patch_size, "decoder_head", dtype=dt)(seq)
    # pre_logits: the encoder's pooled embedding of the VISIBLE tokens (what a contrastive
    # branch on the MAE pass compares), returned so no caller has to capture intermediates.
    return pred, {"mask": mask, "latent": latent, "keep_idx": keep_idx,
                  "pre_logits": enc_aux["pre_logits"]}
