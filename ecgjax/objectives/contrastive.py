"""Lead-drop contrastive pretraining ("contrastive"): CMSC/RLM-style InfoNCE over the GLOBAL batch.

SPEC.md section 2 (CMSC + RLM), generalised: two views of each record, each with its own crop and
its own random lead-drop mask, pooled by one encoder (ST-MEM's ViT, or ECG-FM's wav2vec 2.0
encoder: see `view_encoders.py`), optionally projected, and contrasted with a symmetric InfoNCE. The loss sees the engine's global batch as one array, so the negatives of a row
are the other records on EVERY device (the reference only used its local GPU); with gradient
accumulation they are the global micro-batch.

Views are built on device from one crop per record; all randomness is keyed by the record's
source index (as `masked_autoencoder.py`), so a record's views do not depend on where it lands in
the batch or on the device count.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from ecgjax import objectives
from ecgjax.models import layers
from ecgjax.objectives import base, register, view_encoders
from ecgjax.objectives.masked_autoencoder import compute_dtype

VIEW_MODES = ("two_crops", "adjacent")
POSITIVES = ("record", "patient")

# config.contrastive: this objective's keys, declared once (the hybrid's group extends them).
DEFAULTS: dict[str, Any] = dict(
    view_samples=2250,  # encoder window per view (ST-MEM: 30 patches of 75)
    view_mode="two_crops",  # two_crops: own random crop per view; adjacent: CMSC's two
                            # back-to-back segments (needs input.samples >= 2 x view_samples)
    lead_drop_p=0.5,  # RLM: each lead of each view zeroed with this probability
    temperature=0.1,  # InfoNCE logits = cos / temperature (CMSC: 0.1)
    proj_dim=128,  # projection head Dense(width) -> GELU -> Dense(proj_dim); 0: none
    positives="record",  # record: the other view only; patient: + same batch["patient"]
)

# fold_in tags: each random draw of a record gets its own stream from the record's key.
KEY_CROP, KEY_DROP, KEY_MASK = 0, 1, 3  # KEY_DROP + view, KEY_MASK + view (views 0 and 1)
KEY_DROPOUT = 2**31 - 1  # folded into the step's key (not a record's) for encoder dropout


def record_keys(rng: jax.Array, index: jax.Array | None, batch_size: int) -> jax.Array:
  """One PRNG key per record: `rng` folded with the record's source index (else its position)."""
  if index is None:
    return jax.random.split(rng, batch_size)
  return jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)


def _per_record(rng: jax.Array, b: int) -> jax.Array:
  # Accept either one key (split over the batch) or a batch of keys (B, ...) from record_keys.
  typed = jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
  batched = rng.ndim == (1 if typed else 2)
  return rng if batched else jax.random.split(rng, b)


def fold_keys(keys: jax.Array, tag: int) -> jax.Array:
  """Every key of a batch of per-record keys folded with `tag` (one stream per random draw)."""
  return jax.vmap(lambda k: jax.random.fold_in(k, tag))(keys)


def make_views(x: jax.Array, rng: jax.Array, mode: str = "two_crops",
               view_len: int = 2250) -> tuple[jax.Array, jax.Array]:
  """Two (B, leads, view_len) views of every record of x (B, leads, T).

  "two_crops": each view its own uniformly random crop; "adjacent": two back-to-back segments
  (CMSC), the pair placed at a random start. `rng` is one key or one key per record.
  """
  b, _, t = x.shape
  if mode not in VIEW_MODES:
    raise ValueError(f"view mode must be one of {VIEW_MODES}, got {mode!r}")
  need = view_len if mode == "two_crops" else 2 * view_len
  if t < need:
    raise ValueError(f"view mode {mode!r} with views of {view_len} samples needs inputs of at "
                     f">= {need} samples, got {t}: raise config.input.samples")
  keys = fold_keys(_per_record(rng, b), KEY_CROP)

  def one(rec, key):
    if mode == "two_crops":
      s0, s1 = jax.random.randint(key, (2,), 0, t - view_len + 1)
    else:
      s0 = jax.random.randint(key, (), 0, t - 2 * view_len + 1)
      s1 = s0 + view_len
    cut = lambda s: jax.lax.dynamic_slice_in_dim(rec, s, view_len, axis=-1)
    return cut(s0), cut(s1)

  return jax.vmap(one)(x, keys)


def random_lead_drop(x: jax.Array, p: float, rng: jax.Array,
                     lead_mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Zeroes each lead of x (B, leads, T) with probability p; returns (x, kept (B, leads) 0/1).

  At least one lead per record is kept (one the record has, when `lead_mask` says which): a view
  of nothing but zeros carries no information and would only be a free negative.
  """
  b, n_leads = x.shape[:2]
  u = jax.vmap(lambda k: jax.random.uniform(k, (n_leads,)))(_per_record(rng, b))
  avail = jnp.ones((b, n_leads), bool) if lead_mask is None else lead_mask > 0
  kept = (u >= p) & avail
  # Fallback: the available lead with the largest draw (a uniformly random one of them).
  rescue = jax.nn.one_hot(jnp.argmax(jnp.where(avail, u, -1.0), -1), n_leads, dtype=bool)
  kept = jnp.where(kept.any(-1, keepdims=True), kept, rescue).astype(x.dtype)
  return x * kept[:, :, None], kept


def lead_drop_views(x: jax.Array, keys: jax.Array, *, mode: str, view_len: int, p: float,
                    lead_mask: jax.Array | None = None
                    ) -> tuple[tuple[jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
  """((view0, view1), (kept0, kept1)): own crop and own lead-drop mask per view, keyed per record."""
  v0, v1 = make_views(x, keys, mode, view_len)
  v0, k0 = random_lead_drop(v0, p, fold_keys(keys, KEY_DROP), lead_mask)
  v1, k1 = random_lead_drop(v1, p, fold_keys(keys, KEY_DROP + 1), lead_mask)
  return (v0, v1), (k0, k1)


def _logits(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  norm = lambda z: z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  z1, z2 = norm(z1.astype(jnp.float32)), norm(z2.astype(jnp.float32))
  # HIGHEST: accelerators would otherwise round float32 matmul inputs (TF32 / bf16 passes),
  # enough to move a 0.1-temperature softmax; the (B, B) product is cheap.
  return jnp.matmul(z1, z2.T, precision=jax.lax.Precision.HIGHEST) / temperature


def info_nce(z1: jax.Array, z2: jax.Array, temperature: float,
             positives: jax.Array | None = None) -> jax.Array:
  """Symmetric InfoNCE on L2-normalised rows; positives (B, B) default to the diagonal.

  Each row's loss is the mean of -log_softmax over its positives (CMSC: several per row when
  records share a patient); the two directions (z1 -> z2, z2 -> z1) are averaged.
  """
  logits = _logits(z1, z2, temperature)
  pos = (jnp.eye(logits.shape[0]) if positives is None else positives).astype(jnp.float32)

  def one_way(lg, ps):
    per_row = -jnp.sum(ps * jax.nn.log_softmax(lg, axis=-1), -1) / jnp.maximum(ps.sum(-1), 1.0)
    return per_row.mean()

  return 0.5 * (one_way(logits, pos) + one_way(logits.T, pos.T))


def retrieval_accuracy(z1: jax.Array, z2: jax.Array,
                       positives: jax.Array | None = None) -> jax.Array:
  """Fraction of rows (both directions) whose most similar other-view row is a positive."""
  logits = _logits(z1, z2, 1.0)
  pos = jnp.eye(logits.shape[0], dtype=bool) if positives is None else positives > 0
  hit = lambda lg, ps: jnp.take_along_axis(ps, jnp.argmax(lg, -1)[:, None], -1).mean()
  return 0.5 * (hit(logits, pos) + hit(logits.T, pos.T))


def positives_matrix(batch: base.Batch, mode: str) -> jax.Array | None:
  """(B, B) positives: None (the diagonal) for "record"; same `patient` id for "patient"."""
  if mode not in POSITIVES:
    raise ValueError(f"positives must be one of {POSITIVES}, got {mode!r}")
  if mode == "patient" and "patient" in batch:
    pid = batch["patient"]
    return pid[:, None] == pid[None, :]
  return None  # no patient ids in the batch: the record itself is the only positive


class ProjectionHead(nn.Module):
  """Dense -> GELU -> Dense: the contrastive space (trained, never exported)."""
  hidden: int
  out: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """z: (B, width) float32 -> (B, out) float32."""
    h = layers.dense(self.hidden, "hidden")(z.astype(jnp.float32))
    return layers.dense(self.out, "out")(nn.gelu(h, approximate=False))


# Kept under its old name: the hybrid objective and older callers import it from here.
encoder_description = view_encoders.st_mem_description


class LeadDropContrastive(base.Objective):
  """Two lead-dropped views per record through one encoder (no masking) -> InfoNCE.

  encoder "st_mem_encoder": the ST-MEM ViT, pooled tokens through a projection head (the
  ablation arm of the hybrid); "ecg_fm_encoder": ECG-FM's encoder, the time-averaged transformer
  output compared directly (proj_dim=0), which with adjacent views and patient positives is
  ECG-FM's CMSC + RLM.
  """

  def __init__(self, variant: str, *, leads: tuple[str, ...],
               view_len: int = DEFAULTS["view_samples"],
               view_mode: str = DEFAULTS["view_mode"],
               lead_drop_p: float = DEFAULTS["lead_drop_p"],
               temperature: float = DEFAULTS["temperature"], proj_dim: int = DEFAULTS["proj_dim"],
               positives: str = DEFAULTS["positives"], dtype: str = "float32",
               encoder: str = "st_mem_encoder", remat: str = "none"):
    if positives not in POSITIVES:
      raise ValueError(f"positives must be one of {POSITIVES}, got {positives!r}")
    if proj_dim < 0:
      raise ValueError(f"proj_dim must be >= 0 (0: no projection head), got {proj_dim}")
    self.variant = variant
    self.leads = tuple(leads)
    self.view_len, self.view_mode = int(view_len), view_mode
    self.lead_drop_p, self.temperature, self.positives = lead_drop_p, temperature, positives
    self.encoder = view_encoders.build(encoder, variant, self.view_len, self.leads,
                                       compute_dtype(dtype), remat=remat)
    self.frozen_patterns = self.encoder.frozen_patterns
    self.head = ProjectionHead(self.encoder.width, proj_dim) if proj_dim else None

  def init(self, rng, batch):
    """Encoder (and projection head) params for views of the training batch."""
    r_enc, r_head = jax.random.split(rng)
    x = jnp.zeros(batch["signal"].shape[:2] + (self.view_len,), jnp.float32)
    params = {"encoder": self.encoder.init(r_enc, x)}
    if self.head is not None:
      params["head"] = self.head.init(r_head, jnp.zeros((1, self.encoder.width)))["params"]
    return params, {}

  def embed_views(self, params, batch, rng) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(z0, z1, kept) contrastive vectors of the two views of every record; kept (2B, leads)."""
    x = batch["signal"]
    keys = record_keys(rng, batch.get("index"), x.shape[0])
    drop_rng = jax.random.fold_in(rng, KEY_DROPOUT)  # encoder dropout (ECG-FM only)
    views, kept = lead_drop_views(x, keys, mode=self.view_mode, view_len=self.view_len,
                                  p=self.lead_drop_p, lead_mask=batch.get("lead_mask"))
    # One encoder call over both views: half the launches, same numbers.
    z = self.encoder.embed(params["encoder"], jnp.concatenate(views), drop_rng)
    if self.head is not None:
      z = self.head.apply({"params": params["head"]}, z)
    z0, z1 = jnp.split(z, 2)
    return z0, z1, jnp.concatenate(kept)

  def loss(self, params, collections, batch, rng, step):
    """Symmetric InfoNCE at `temperature` over the global batch."""
    del step
    z0, z1, kept = self.embed_views(params, batch, rng)
    pos = positives_matrix(batch, self.positives)
    loss = info_nce(z0, z1, self.temperature, pos)
    return loss, base.LossAux(
        terms={"contrastive": loss},
        metrics={"retrieval_top1": retrieval_accuracy(z0, z1, pos),
                 "leads_kept": kept.mean()},
        collections=collections)

  def export_encoder(self, params, collections):
    """The encoder params (the projection head is a training device, not exported)."""
    del collections
    return {"params": params["encoder"]}, self.encoder.description()


def view_options(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """`config.<name>` with `view_samples` checked against the input length and the view mode
  and passed on as the constructors' `view_len`."""
  o = objectives.options(config, name)
  view_len = int(o.pop("view_samples"))
  need = view_len * (2 if o["view_mode"] == "adjacent" else 1)
  if need > config.input.samples:
    raise ValueError(f"config.{name}.view_mode={o['view_mode']!r} with view_samples={view_len} "
                     f"needs config.input.samples >= {need}, got {config.input.samples}")
  return {**o, "view_len": view_len}


@register("contrastive", DEFAULTS)
def _build(config: ml_collections.ConfigDict) -> LeadDropContrastive:
  return LeadDropContrastive(config.variant, leads=tuple(config.input.leads),
                             dtype=config.dtype, encoder=config.model,
                             remat=config.get("remat", "none"),
                             **view_options(config, "contrastive"))
