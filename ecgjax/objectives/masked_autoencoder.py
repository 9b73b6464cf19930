"""The ST-MEM masked-autoencoder objective ("mae"): per-lead random masking + norm-pix loss."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ecgjax import models, objectives
from ecgjax import leads as leads_lib
from ecgjax.models import st_mem
from ecgjax.objectives import base, mae, register

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}

# config.mae: this objective's keys, declared once (configs read them through the registry).
DEFAULTS: dict[str, Any] = dict(
    mask_ratio=0.75,  # per lead: int(n * (1 - mask_ratio)) patches seen (23 of 30 masked)
)


def compute_dtype(name: str) -> Any:
  """`config.dtype` string -> jnp dtype, with an error naming the key."""
  if name not in DTYPES:
    raise ValueError(f"config.dtype must be one of {sorted(DTYPES)}, got {name!r}")
  return DTYPES[name]


class MaskedAutoencoder(base.Objective):
  """ST-MEM pretraining: encoder sees 1 - mask_ratio of each lead's patches."""

  frozen_patterns = st_mem.FROZEN_IN_PRETRAINING

  def __init__(self, variant: str, *, leads: tuple[str, ...], samples: int,
               mask_ratio: float = DEFAULTS["mask_ratio"], dtype: str = "float32", fs: float = 250.0,
               model_overrides: dict[str, Any] | None = None, remat: str = "none"):
    """model_overrides: STMEM fields beyond the variant (e.g. a checkpoint's sizes); remat:
    config.remat (not part of the export: a training-time choice)."""
    self.variant = variant
    self.fs = fs
    self.leads = tuple(leads)
    # Each present lead keeps its own embedding row (I=0 ... V6=11).
    self.lead_idx = np.asarray(leads_lib.lead_indices(self.leads), np.int32)
    self.overrides = {"seq_len": int(samples)}
    self.model = models.build_model("st_mem", variant, mask_ratio=mask_ratio,
                                    dtype=compute_dtype(dtype), remat=remat, **self.overrides,
                                    **(model_overrides or {}))
    # The export's encoder is rebuilt from the variant: carry the encoder's own overrides.
    encoder_fields = {f.name for f in dataclasses.fields(st_mem.STMEMEncoder)}
    self.overrides.update({k: v for k, v in (model_overrides or {}).items()
                           if k in encoder_fields})

  def _noise_shape(self, x: jax.Array) -> tuple[int, ...]:
    return x.shape[:2] + (self.model.num_patches,)

  def masking_noise(self, rng: jax.Array, x: jax.Array, index: jax.Array | None) -> jax.Array:
    """Uniform noise per (record, lead, patch), keyed by the record's source index.

    Keying by record rather than by batch position makes a record's mask independent
    of where it lands in the global batch, so runs with different process or device
    counts (which order the batch differently) see identical masks.
    """
    if index is None:
      return jax.random.uniform(rng, self._noise_shape(x))
    keys = jax.vmap(lambda i: jax.random.fold_in(rng, i))(index)
    return jax.vmap(lambda k: jax.random.uniform(k, self._noise_shape(x)[1:]))(keys)

  def init(self, rng, batch):
    """Params from a batch of the training shape; no mutable collections."""
    x = jnp.asarray(batch["signal"])
    variables = self.model.init(rng, x, jnp.zeros(self._noise_shape(x)), lead_idx=self.lead_idx)
    return variables["params"], {}

  def loss(self, params, collections, batch, rng, step):
    """Normalised-pixel MSE over masked patches of the present leads."""
    del step
    x = batch["signal"]
    noise = self.masking_noise(rng, x, batch.get("index"))
    pred, aux = self.model.apply({"params": params}, x, noise, lead_idx=self.lead_idx)
    mask = aux["mask"]
    if "lead_mask" in batch:  # leads a record lacks are zeros: nothing to reconstruct there
      mask = mask * batch["lead_mask"][:, :, None]
    loss = mae.norm_pix_loss(x, pred, mask, self.model.patch_size)
    return loss, base.LossAux(terms={"mae": loss},
                              metrics={"masked_fraction": mask.mean()},
                              collections=collections,
                              weight=mask.astype(jnp.float32).sum())

  def export_encoder(self, params, collections):
    """The encoder's params (positional table then trains like any other) and description."""
    del collections
    return {"params": params["encoder"]}, {
        "model": "st_mem",
        "variant": self.variant,
        "module": "st_mem_encoder",
        "overrides": {**self.overrides},
        "embedding": {"dim": int(self.model.width),
                      "pooling": "mean of non-SEP tokens, then the final LayerNorm"},
        "leads": list(self.leads),
    }

  def reconstruct(self, params, x: np.ndarray, rng: jax.Array) -> dict[str, np.ndarray]:
    """Masked reconstruction of `x` in signal units (predictions de-normalised per patch)."""
    x = jnp.asarray(x, jnp.float32)
    noise = jax.random.uniform(rng, self._noise_shape(x))

    @jax.jit
    def run(params, x, noise):
      pred, aux = self.model.apply({"params": params}, x, noise, lead_idx=self.lead_idx)
      patches = st_mem.patchify(x, self.model.patch_size)
      mean = patches.mean(-1, keepdims=True)
      std = jnp.sqrt(patches.var(-1, keepdims=True, ddof=1) + 1e-6)
      return (pred.astype(jnp.float32) * std + mean).reshape(x.shape), aux["mask"]

    recon, mask = run(params, x, noise)
    return {"signal": np.asarray(x), "reconstruction": np.asarray(recon),
            "mask": np.asarray(mask)}


@register("mae", DEFAULTS)
def _build(config: ml_collections.ConfigDict) -> MaskedAutoencoder:
  if config.model != "st_mem":
    raise ValueError(f"objective 'mae' trains model 'st_mem', got config.model={config.model!r}")
  return MaskedAutoencoder(config.variant, leads=tuple(config.input.leads),
                           samples=config.input.samples, dtype=config.dtype, fs=config.input.fs,
                           remat=config.get("remat", "none"),
                           **objectives.options(config, "mae"))
