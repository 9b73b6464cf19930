"""Hybrid MAE + contrastive pretraining ("hybrid"): one ST-MEM model learns both (SPEC.md section 5).

Per record two views, each with its own crop, lead-drop mask and MAE patch mask, go through ONE
ST-MEM masked autoencoder. L_mae is ST-MEM's norm-pix loss on each view's masked patches of the
leads it kept (the mean of the two views); L_con is the symmetric InfoNCE between the two views'
pooled VISIBLE-token encoder embeddings (`contrastive_pass="visible"`, no extra encoder pass) or
those of an extra unmasked encoder pass (`"full"`), through a small projection head, over the
global batch. The total is fixed-weighted or Kendall uncertainty-weighted (SPEC.md section 4,
first form: sum_t exp(-s_t) L_t + s_t, s_t learnable from 0).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ecgjax import models
from ecgjax import leads as leads_lib
from ecgjax.models import st_mem
from ecgjax.objectives import base, mae, masked_autoencoder, register
from ecgjax.objectives import contrastive as con
from ecgjax.objectives.masked_autoencoder import compute_dtype

WEIGHTINGS = ("fixed", "uncertainty")
CONTRASTIVE_PASSES = ("visible", "full")
TASKS = ("mae", "contrastive")

# config.hybrid: the MAE's and the contrastive objective's keys, plus how the two are combined.
DEFAULTS: dict[str, Any] = dict(
    **masked_autoencoder.DEFAULTS,
    **con.DEFAULTS,
    contrastive_pass="visible",  # visible: pooled visible tokens of the MAE pass; full: an
                                 # extra unmasked encoder pass for the contrastive branch
    # w_mae L_mae + w_con L_con, or Kendall: sum_t exp(-s_t) L_t + s_t with s_t learnt from 0.
    weighting="fixed",  # fixed | uncertainty
    w_mae=1.0,  # weight of the norm-pix MAE loss (fixed weighting)
    w_con=1.0,  # weight of the InfoNCE loss (fixed weighting)
)


class HybridObjective(base.Objective):
  """ST-MEM MAE on two lead-dropped views plus InfoNCE between their pooled embeddings."""

  frozen_patterns = st_mem.FROZEN_IN_PRETRAINING

  def __init__(self, variant: str, *, leads: tuple[str, ...],
               view_len: int = DEFAULTS["view_samples"], view_mode: str = DEFAULTS["view_mode"],
               mask_ratio: float = DEFAULTS["mask_ratio"],
               lead_drop_p: float = DEFAULTS["lead_drop_p"],
               temperature: float = DEFAULTS["temperature"], proj_dim: int = DEFAULTS["proj_dim"],
               positives: str = DEFAULTS["positives"], w_mae: float = DEFAULTS["w_mae"],
               w_con: float = DEFAULTS["w_con"], weighting: str = DEFAULTS["weighting"],
               contrastive_pass: str = DEFAULTS["contrastive_pass"], dtype: str = "float32",
               remat: str = "none"):
    if weighting not in WEIGHTINGS:
      raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if contrastive_pass not in CONTRASTIVE_PASSES:
      raise ValueError(f"contrastive_pass must be one of {CONTRASTIVE_PASSES}, "
                       f"got {contrastive_pass!r}")
    if positives not in con.POSITIVES:
      raise ValueError(f"positives must be one of {con.POSITIVES}, got {positives!r}")
    self.variant = variant
    self.leads = tuple(leads)
    self.lead_idx = np.asarray(leads_lib.lead_indices(self.leads), np.int32)
    self.view_len, self.view_mode = int(view_len), view_mode
    self.lead_drop_p, self.temperature, self.positives = lead_drop_p, temperature, positives
    self.w_mae, self.w_con, self.weighting = float(w_mae), float(w_con), weighting
    self.contrastive_pass = contrastive_pass
    self.model = models.build_model("st_mem", variant, seq_len=self.view_len,
                                    mask_ratio=mask_ratio, dtype=compute_dtype(dtype),
                                    remat=remat)
    # The same encoder, unbound: applied to params["model"]["encoder"] for the "full" pass.
    self.encoder = self.model.make_encoder()
    self.head = con.ProjectionHead(self.model.width, proj_dim)

  def _noise(self, keys: jax.Array, view: int, n_leads: int) -> jax.Array:
    shape = (n_leads, self.model.num_patches)
    return jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, con.KEY_MASK + view),
                                                 shape))(keys)

  def init(self, rng, batch):
    """Model, projection head and (uncertainty weighting) log-variance params."""
    r_model, r_head = jax.random.split(rng)
    b, n_leads = batch["signal"].shape[:2]
    x = jnp.zeros((b, n_leads, self.view_len), jnp.float32)
    noise = jnp.zeros((b, n_leads, self.model.num_patches))
    params = {
        "model": self.model.init(r_model, x, noise, lead_idx=self.lead_idx)["params"],
        "head": self.head.init(r_head, jnp.zeros((1, self.model.width)))["params"],
    }
    if self.weighting == "uncertainty":
      # s_t = log sigma_t^2 = 0: both tasks start at weight 1. Scalars get no weight decay.
      params["log_vars"] = {t: jnp.zeros((), jnp.float32) for t in TASKS}
    return params, {}

  def task_losses(self, params, batch, rng) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
    """({"mae": L_mae, "contrastive": L_con} unweighted, metrics)."""
    x = batch["signal"]
    b, n_leads = x.shape[:2]
    keys = con.record_keys(rng, batch.get("index"), b)
    lead_mask = batch.get("lead_mask")
    views, kept = con.lead_drop_views(x, keys, mode=self.view_mode, view_len=self.view_len,
                                      p=self.lead_drop_p, lead_mask=lead_mask)
    xs = jnp.concatenate(views)  # (2B, leads, view_len): both views in one forward
    noise = jnp.concatenate([self._noise(keys, 0, n_leads), self._noise(keys, 1, n_leads)])
    variables = {"params": params["model"]}
    if self.contrastive_pass == "visible":
      pred, aux = self.model.apply(variables, xs, noise, lead_idx=self.lead_idx)
      emb = aux["pre_logits"]  # the pooled visible tokens of this very pass
    else:
      pred, aux = self.model.apply(variables, xs, noise, lead_idx=self.lead_idx)
      emb, _ = self.encoder.apply({"params": params["model"]["encoder"]}, xs,
                                  lead_idx=self.lead_idx)

    # Dropped (zeroed) leads and leads the record lacks have nothing to reconstruct.
    mask = aux["mask"] * jnp.concatenate(kept)[:, :, None]
    if lead_mask is not None:
      mask = mask * jnp.concatenate([lead_mask, lead_mask])[:, :, None]
    per_view = [mae.norm_pix_loss(v, p, m, self.model.patch_size)
                for v, p, m in zip(views, jnp.split(pred, 2), jnp.split(mask, 2))]
    l_mae = 0.5 * (per_view[0] + per_view[1])

    z0, z1 = jnp.split(self.head.apply({"params": params["head"]}, emb), 2)
    pos = con.positives_matrix(batch, self.positives)
    l_con = con.info_nce(z0, z1, self.temperature, pos)
    metrics = {"retrieval_top1": con.retrieval_accuracy(z0, z1, pos),
               "masked_fraction": mask.mean(), "leads_kept": jnp.concatenate(kept).mean()}
    return {"mae": l_mae, "contrastive": l_con}, metrics

  def loss(self, params, collections, batch, rng, step):
    """w_mae L_mae + w_con L_con, or sum_t exp(-s_t) L_t + s_t; tasks sum to the loss."""
    del step
    raw, metrics = self.task_losses(params, batch, rng)
    if self.weighting == "fixed":
      tasks = {"mae": self.w_mae * raw["mae"], "contrastive": self.w_con * raw["contrastive"]}
    else:
      s = params["log_vars"]
      tasks = {t: jnp.exp(-s[t]) * raw[t] + s[t] for t in TASKS}
      metrics.update({f"log_var_{t}": s[t] for t in TASKS})
    loss = tasks["mae"] + tasks["contrastive"]
    return loss, base.LossAux(terms=dict(raw), metrics=metrics, collections=collections,
                              tasks=tasks)

  def export_encoder(self, params, collections):
    """The MAE's encoder params (decoder, head and log-variances stay behind)."""
    del collections
    return {"params": params["model"]["encoder"]}, con.encoder_description(
        self.variant, self.model.width, self.view_len, self.leads)


@register("hybrid", DEFAULTS)
def _build(config: ml_collections.ConfigDict) -> HybridObjective:
  if config.model != "st_mem":
    raise ValueError(f"objective 'hybrid' trains model 'st_mem', got config.model={config.model!r}")
  return HybridObjective(config.variant, leads=tuple(config.input.leads), dtype=config.dtype,
                         remat=config.get("remat", "none"),
                         **con.view_options(config, "hybrid"))
