"""The wav2vec 2.0 objective ("wav2vec2") that pretrains ECG-FM, with CMSC + RLM (SPEC.md 2).

Shapes stay static under jit: every frame is predicted and scored, and the contrastive loss,
code statistics and negatives are weighted or drawn by the (per-record, variable-size) span
mask instead of gathering a ragged set of masked frames.

ECG-FM's full recipe adds, in the SAME forward pass: `views=2` cuts each 10 s record into two
adjacent 5 s segments (each its own span mask), `lead_drop_p` zeroes every lead of every segment
independently (RLM), and `cmsc_weight` > 0 adds CMSC, the symmetric InfoNCE between the two
segments' time-averaged transformer outputs, positives = same record or same patient, negatives
from the GLOBAL batch (every device; with gradient accumulation, the global micro-batch). The
pooled outputs come from the masked pass (masked frames hold the mask embedding), so CMSC costs
no second encoder pass.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from ecgjax import models, objectives
from ecgjax.objectives import base, register, view_encoders
from ecgjax.objectives import contrastive as con
from ecgjax.objectives.masked_autoencoder import compute_dtype

# Config keys this objective reads beyond variant / dtype / input.samples, with the reference's
# pretraining values (SPEC.md section 2).
DEFAULTS: dict[str, Any] = dict(
    mask_prob=0.65,  # nominal masked share: spans = int(p * frames / mask_length + U)
    mask_length=10,  # frames per span
    min_masks=2,  # at least this many spans per record
    num_negatives=100,  # distractors per masked frame, from the same record's masked frames
    logit_temp=0.1,  # cosine similarity / logit_temp
    diversity_weight=0.1,  # (num_vars - perplexity) / num_vars
    feature_pen_weight=10.0,  # mean(raw CNN features ** 2)
    gumbel_temperature=(2.0, 0.5, 0.999995),  # (start, end, decay per update)
    views=1,  # 1: the input window is the segment; 2: two adjacent halves (CMSC)
    lead_drop_p=0.0,  # RLM: each lead of each segment zeroed with this probability
    cmsc_weight=0.0,  # weight of CMSC's InfoNCE between the two segments (needs views=2)
    temperature=0.1,  # CMSC logits = cos / temperature (the key the contrastive objective uses)
    positives="patient",  # CMSC positives: "record" (its other segment) or "patient"
)


def gumbel_temperature(step: jax.Array, start: float, end: float, decay: float) -> jax.Array:
  """max(start * decay ** step, end), annealed per optimizer update."""
  # exp(step * log(decay)) with the log taken in float64: float32(0.999995) ** step drifts by
  # ~0.3% at 1e5 steps because the decay itself rounds.
  return jnp.maximum(start * jnp.exp(step.astype(jnp.float32) * math.log(decay)), end)


def span_mask(key: jax.Array, frames: int, mask_prob: float, mask_length: int,
              min_masks: int) -> jax.Array:
  """(frames,) bool: int(p * T / L + U) (>= min_masks) distinct span starts in [0, T - L).

  Spans may overlap (as in the reference), so the masked share is below `mask_prob`: with T=156,
  L=10, p=0.65 about 10.6 spans cover ~49% of the frames.
  """
  k_num, k_pos = jax.random.split(key)
  starts_range = frames - mask_length
  num = jnp.floor(mask_prob * frames / mask_length + jax.random.uniform(k_num)).astype(jnp.int32)
  num = jnp.clip(num, min_masks, starts_range)
  # The `num` smallest of iid uniforms pick `num` distinct starts uniformly without replacement.
  rank = jnp.argsort(jnp.argsort(jax.random.uniform(k_pos, (starts_range,))))
  starts = jnp.zeros((frames,), jnp.int32).at[:starts_range].set((rank < num).astype(jnp.int32))
  # Frame t is masked when a span starts in (t - L, t]: a windowed sum of the start indicator.
  c = jnp.cumsum(starts)
  before = jnp.concatenate([jnp.zeros((mask_length,), jnp.int32), c[:-mask_length]])
  return (c - before) > 0


def sample_negatives(key: jax.Array, mask: jax.Array, num: int) -> jax.Array:
  """(T,) mask -> (T, num) frame indices drawn uniformly from the OTHER masked frames.

  Rows of unmasked frames are drawn too (fixed shapes) but carry no weight in the loss.
  """
  t = mask.shape[0]
  masked_count = mask.sum()
  # Masked frame positions first, in time order: order[j] is the j-th masked frame.
  order = jnp.argsort(jnp.where(mask, 0, 1) * t + jnp.arange(t))
  rank = jnp.cumsum(mask) - 1  # j of each masked frame
  # Draw j from the M - 1 other masked frames, then skip over the frame's own rank.
  j = jnp.floor(jax.random.uniform(key, (t, num)) * jnp.maximum(masked_count - 1, 1))
  j = j.astype(jnp.int32)
  j = jnp.where(j >= rank[:, None], j + 1, j)
  return order[jnp.clip(j, 0, t - 1)]


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """(B, T, F) x (B, S, F) -> (B, T, S) cosine similarities (norms clamped at 1e-8)."""
  a = a / jnp.maximum(jnp.linalg.norm(a, axis=-1, keepdims=True), 1e-8)
  b = b / jnp.maximum(jnp.linalg.norm(b, axis=-1, keepdims=True), 1e-8)
  return jnp.einsum("btf,bsf->bts", a, b)


def perplexity(probs: jax.Array, weight: jax.Array) -> jax.Array:
  """Sum over groups of exp(entropy) of the weight-averaged code distribution; probs (B,T,G,V)."""
  avg = jnp.einsum("btgv,bt->gv", probs, weight) / jnp.maximum(weight.sum(), 1.0)
  return jnp.exp(-jnp.sum(avg * jnp.log(avg + 1e-7), -1)).sum()


def wav2vec2_terms(preds: jax.Array, targets: jax.Array, codes: jax.Array,
                   code_logits: jax.Array, features: jax.Array, mask: jax.Array,
                   negs: jax.Array, *, logit_temp: float, diversity_weight: float,
                   feature_pen_weight: float) -> tuple[jax.Array, dict, dict]:
  """The wav2vec 2.0 loss from the model's outputs: (loss, terms, metrics).

  preds, targets (B, T, F); codes (B, T, G) the training codes; code_logits (B, T, G, V);
  features (B, T, C) raw CNN features; mask (B, T) bool; negs (B, T, N) distractor frames.
  Logits = cosine / logit_temp for the positive (index 0) and N negatives, a negative whose
  code equals the positive's at -inf; cross-entropy at index 0 over masked frames; diversity
  (V*G - perplexity of the mean softmax) / (V*G); feature penalty = mean squared features.
  """
  sim = _cosine(preds, targets)  # (B, T, T): pred t vs target s
  pos = jnp.diagonal(sim, axis1=1, axis2=2)[..., None]
  neg = jnp.take_along_axis(sim, negs, axis=2)
  # A distractor with the positive's code (same target vector) cannot be told apart.
  neg_codes = jax.vmap(lambda c, n: c[n])(codes, negs)  # (B, T, N, G)
  same = jnp.all(neg_codes == codes[:, :, None, :], -1)
  logits = jnp.concatenate([pos, neg], -1) / logit_temp
  logits = logits.at[..., 1:].set(jnp.where(same, -jnp.inf, logits[..., 1:]))
  w = mask.astype(jnp.float32)
  n_masked = jnp.maximum(w.sum(), 1.0)
  nll = -jax.nn.log_softmax(logits, -1)[..., 0]
  contrastive = jnp.sum(nll * w) / n_masked
  accuracy = jnp.sum((jnp.argmax(logits, -1) == 0) * w) / n_masked
  # Code statistics over masked frames only: the reference quantises only those.
  num_vars = code_logits.shape[-1] * code_logits.shape[-2]
  prob_ppl = perplexity(jax.nn.softmax(code_logits, -1), w)
  # fairseq logs code_perplexity from the argmax of the logits, without the Gumbel noise
  # that picks the training codes.
  argmax_codes = jax.nn.one_hot(jnp.argmax(code_logits, -1), code_logits.shape[-1],
                                dtype=jnp.float32)
  code_ppl = perplexity(argmax_codes, w)
  diversity = (num_vars - prob_ppl) / num_vars
  feature_pen = jnp.mean(jnp.square(features.astype(jnp.float32)))
  loss = contrastive + diversity_weight * diversity + feature_pen_weight * feature_pen
  terms = {"wav2vec2": contrastive, "diversity": diversity, "feature_pen": feature_pen}
  metrics = {"code_perplexity": code_ppl, "prob_perplexity": prob_ppl, "accuracy": accuracy,
             "masked_fraction": w.mean()}
  return loss, terms, metrics


class Wav2Vec2(base.Objective):
  """ECG-FM pretraining: contrastive + codebook diversity + feature penalty."""

  def __init__(self, variant: str, *, samples: int, dtype: str = "float32",
               model_overrides: dict[str, Any] | None = None, remat: str = "none",
               **options: Any):
    """model_overrides: ECGFM fields beyond the variant (sizes, dropouts), e.g. for tests."""
    unknown = set(options) - set(DEFAULTS)
    if unknown:
      raise ValueError(f"unknown wav2vec2 options {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    self.opts = o = {**DEFAULTS, **options}
    if o["views"] not in (1, 2):
      raise ValueError(f"views must be 1 or 2 (two adjacent segments), got {o['views']}")
    if o["cmsc_weight"] and o["views"] != 2:
      raise ValueError("cmsc_weight > 0 contrasts two segments of a record: set views=2")
    if o["positives"] not in con.POSITIVES:
      raise ValueError(f"positives must be one of {con.POSITIVES}, got {o['positives']!r}")
    self.variant = variant
    self.samples = int(samples) // o["views"]  # the encoder's window (one segment)
    self.frames = view_encoders.conv_frames(self.samples)
    if self.frames <= self.opts["mask_length"]:
      raise ValueError(f"{samples} samples give {self.frames} frames, too few for spans of "
                       f"{self.opts['mask_length']}")
    self.model = models.build_model("ecg_fm", variant, dtype=compute_dtype(dtype),
                                    remat=remat, **(model_overrides or {}))
    self.num_vars = self.model.latent_groups * self.model.latent_vars

  def masks(self, rng: jax.Array, index: jax.Array | None, batch_size: int) -> jax.Array:
    """(B, T) span masks keyed per record by its source index (independent of batch layout)."""
    if index is None:
      index = jnp.arange(batch_size)
    o = self.opts
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)
    return jax.vmap(lambda k: span_mask(k, self.frames, o["mask_prob"], o["mask_length"],
                                        o["min_masks"]))(keys)

  def init(self, rng, batch):
    """Params from a batch of the training shape; no mutable collections."""
    x = jnp.asarray(batch["signal"])[..., :self.samples]
    p_rng, g_rng = jax.random.split(rng)
    mask = jnp.zeros((x.shape[0], self.frames), bool)
    variables = self.model.init({"params": p_rng, "gumbel": g_rng}, x, mask)
    return variables["params"], {}

  def segments(self, batch: base.Batch, rng: jax.Array) -> tuple[jax.Array, jax.Array,
                                                                 jax.Array]:
    """(x (V*B, leads, samples), segment index (V*B,), leads kept (V*B, leads)).

    Row v*B + i is segment v of record i; its index 2 * index + v (views=2) keys its masks.
    """
    o, x = self.opts, batch["signal"]
    b = x.shape[0]
    index = batch.get("index")
    index = jnp.arange(b) if index is None else index
    keys = con.record_keys(rng, index, b)
    lead_mask = batch.get("lead_mask")
    if o["views"] == 2:
      views, kept = con.lead_drop_views(x, keys, mode="adjacent", view_len=self.samples,
                                        p=o["lead_drop_p"], lead_mask=lead_mask)
      return (jnp.concatenate(views), jnp.concatenate([2 * index, 2 * index + 1]),
              jnp.concatenate(kept))
    if o["lead_drop_p"] > 0:
      x, kept = con.random_lead_drop(x, o["lead_drop_p"], con.fold_keys(keys, con.KEY_DROP),
                                     lead_mask)
    else:
      kept = jnp.ones(x.shape[:2], x.dtype) if lead_mask is None else lead_mask
    return x, index, kept

  def draws(self, batch: base.Batch, rng: jax.Array, step: jax.Array | int) -> dict[str, Any]:
    """Everything random in one loss evaluation, from `rng`: the segments (x, index, kept),
    the span masks, the distractor frames, the Gumbel temperature and the rngs of dropout
    and of the Gumbel noise. `loss` uses exactly these (a reference can replay them)."""
    o = self.opts
    mask_rng, neg_rng, drop_rng, gumbel_rng, view_rng = jax.random.split(rng, 5)
    x, index, kept = self.segments(batch, view_rng)
    mask = self.masks(mask_rng, index, x.shape[0])
    keys = jax.vmap(lambda i: jax.random.fold_in(neg_rng, i))(index)
    negs = jax.vmap(lambda k, m: sample_negatives(k, m, o["num_negatives"]))(keys, mask)
    tau = gumbel_temperature(jnp.asarray(step), *o["gumbel_temperature"])
    return {"x": x, "index": index, "kept": kept, "mask": mask, "negs": negs, "tau": tau,
            "rngs": {"dropout": drop_rng, "gumbel": gumbel_rng}}

  def loss(self, params, collections, batch, rng, step):
    """wav2vec 2.0 CE (positive at index 0) + diversity + feature penalty (+ CMSC)."""
    o = self.opts
    d = self.draws(batch, rng, step)
    mask, negs, tau, kept = d["mask"], d["negs"], d["tau"], d["kept"]
    out, aux = self.model.apply({"params": params}, d["x"], mask, tau, train=True,
                                rngs=d["rngs"])
    loss, terms, metrics = wav2vec2_terms(
        out["preds"], out["targets"], out["codes"], out["code_logits"], aux["features"], mask,
        negs, logit_temp=o["logit_temp"], diversity_weight=o["diversity_weight"],
        feature_pen_weight=o["feature_pen_weight"])
    metrics.update(temperature=tau, leads_kept=kept.mean())
    if o["cmsc_weight"]:
      z0, z1 = jnp.split(aux["pre_logits"], 2)  # the time-averaged transformer output
      positives = con.positives_matrix(batch, o["positives"])
      cmsc = con.info_nce(z0, z1, o["temperature"], positives)
      loss = loss + o["cmsc_weight"] * cmsc
      terms["cmsc"] = cmsc
      metrics["cmsc_retrieval_top1"] = con.retrieval_accuracy(z0, z1, positives)
    return loss, base.LossAux(terms=terms, metrics=metrics, collections=collections)

  def export_encoder(self, params, collections):
    """The encoder's params (without the pretraining-only mask_emb) and description."""
    del collections
    enc = {k: v for k, v in params["encoder"].items() if k != "mask_emb"}
    return {"params": enc}, view_encoders.ecg_fm_description(self.variant, self.model.width, self.samples)


@register("wav2vec2", DEFAULTS)
def _build(config: ml_collections.ConfigDict) -> Wav2Vec2:
  if config.model != "ecg_fm":
    raise ValueError(f"objective 'wav2vec2' trains model 'ecg_fm', got {config.model!r}")
  return Wav2Vec2(config.variant, samples=config.input.samples, dtype=config.dtype,
                  remat=config.get("remat", "none"),
                  **objectives.options(config, "wav2vec2"))
