"""The encoders a view-based objective can train: one small adapter per model family.

An adapter hides how a family is initialised, applied and exported, so the contrastive objective
(and any later view objective) is written once for ST-MEM's ViT and ECG-FM's wav2vec 2.0 encoder:
`init(rng, x) -> params`, `embed(params, x, rng) -> (B, width) float32`, `description()`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ecgjax import models
from ecgjax import leads as leads_lib
from ecgjax.models import st_mem

PyTree = object
# config.model -> family of the encoder a view objective trains.
FAMILIES = {"st_mem_encoder": "st_mem", "st_mem": "st_mem", "ecg_fm_encoder": "ecg_fm",
            "ecg_fm": "ecg_fm"}


def conv_frames(samples: int, layers: int = 4) -> int:
  """Frames ECG-FM's feature extractor (k=2, stride=2 convolutions) makes of `samples`."""
  for _ in range(layers):
    samples = (samples - 2) // 2 + 1
  return samples


def st_mem_description(variant: str, width: int, view_len: int,
                       leads: tuple[str, ...]) -> dict:
  """The export description of an ST-MEM encoder with a `view_len` window."""
  return {
      "model": "st_mem",
      "variant": variant,
      "module": "st_mem_encoder",
      "overrides": {"seq_len": int(view_len)},
      "embedding": {"dim": int(width),
                    "pooling": "mean of non-SEP tokens, then the final LayerNorm"},
      "leads": list(leads),
      # The encoder window can be shorter than the training input (views are sub-crops):
      # the export's input contract must say this length.
      "input": {"samples": int(view_len)},
  }


def ecg_fm_description(variant: str, width: int, samples: int) -> dict:
  """The export description of an ECG-FM encoder taking `samples` per segment."""
  return {
      "model": "ecg_fm",
      "variant": variant,
      "module": "ecg_fm_encoder",
      "overrides": {},
      "embedding": {"dim": int(width), "pooling": "mean over frames",
                    "frames": conv_frames(samples)},
      "input": {"samples": int(samples)},
  }


class StMemViews:
  """ST-MEM's ViT over all its patches (no masking); the pooled, final-LN embedding."""

  frozen_patterns = st_mem.FROZEN_IN_PRETRAINING

  def __init__(self, variant: str, view_len: int, leads: tuple[str, ...], dtype,
               remat: str = "none"):
    self.variant, self.view_len, self.leads = variant, int(view_len), tuple(leads)
    self.lead_idx = np.asarray(leads_lib.lead_indices(self.leads), np.int32)
    self.module = models.build_model("st_mem_encoder", variant, seq_len=self.view_len,
                                     dtype=dtype, remat=remat)
    self.width = self.module.width

  def init(self, rng: jax.Array, x: jax.Array) -> PyTree:
    """Params for views shaped like x (B, leads, view_len)."""
    return self.module.init(rng, x, lead_idx=self.lead_idx)["params"]

  def embed(self, params: PyTree, x: jax.Array, rng: jax.Array) -> jax.Array:
    """(B, width) embeddings of x (B, leads, view_len); the ViT has no dropout."""
    del rng
    emb, _ = self.module.apply({"params": params}, x, lead_idx=self.lead_idx)
    return emb

  def description(self) -> dict:
    """Export description (module, overrides, embedding, input window)."""
    return st_mem_description(self.variant, self.width, self.view_len, self.leads)


class EcgFmViews:
  """ECG-FM's encoder in pretraining mode: dropouts on, 0.1 gradient into the CNN (SPEC 2).

  The embedding is CMSC's global feature: the transformer output averaged over time.
  """

  frozen_patterns: tuple[str, ...] = ()

  def __init__(self, variant: str, view_len: int, leads: tuple[str, ...], dtype,
               feature_grad_mult: float = 0.1, remat: str = "none"):
    self.variant, self.view_len, self.leads = variant, int(view_len), tuple(leads)
    self.module = models.build_model("ecg_fm_encoder", variant, dtype=dtype,
                                     feature_grad_mult=feature_grad_mult, remat=remat)
    self.width = self.module.width
    if conv_frames(self.view_len) < 2:
      raise ValueError(f"ECG-FM views of {view_len} samples give fewer than 2 frames")

  def init(self, rng: jax.Array, x: jax.Array) -> PyTree:
    """Params for views shaped like x (B, leads, view_len) (no mask embedding)."""
    return self.module.init(rng, x)["params"]

  def embed(self, params: PyTree, x: jax.Array, rng: jax.Array) -> jax.Array:
    """(B, width) time-averaged transformer outputs, dropout keyed by `rng`."""
    emb, _ = self.module.apply({"params": params}, x, train=True, rngs={"dropout": rng})
    return emb.astype(jnp.float32)

  def description(self) -> dict:
    """Export description; the encoder's fields come from its variant alone."""
    return ecg_fm_description(self.variant, self.width, self.view_len)


def build(model: str, variant: str, view_len: int, leads: tuple[str, ...], dtype, *,
          remat: str = "none"):
  """The adapter for `config.model` (st_mem_encoder | ecg_fm_encoder)."""
  family = FAMILIES.get(model)
  if family is None:
    raise ValueError(f"view objectives train st_mem_encoder or ecg_fm_encoder, got "
                     f"config.model={model!r}")
  if family == "st_mem":
    return StMemViews(variant, view_len, leads, dtype, remat=remat)
  return EcgFmViews(variant, view_len, leads, dtype, remat=remat)

