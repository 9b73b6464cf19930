"""Model registry: build_model(name, variant, **overrides).

Every model returns `(output, aux)`; an encoder's aux has its pooled embedding as
`pre_logits`. Every encoder is called as `module(x, *, train=False, lead_idx=None)`: `train`
turns on dropout / batch statistics where the model has them, and `lead_idx` (canonical lead
indices of x's rows) is read by encoders with a lead table (ST-MEM) and must be None for the
others, which take leads as channels in the contract's order.
"""

from typing import Any

import flax.linen as nn

from ecgjax import registry
from ecgjax.models import ecg_fm, net1d, resnet, st_mem


# Each model: its name, what it is, and how to build it at a size (`variant`).
MODELS = registry.Registry("model")


@MODELS.register("st_mem")  # full MAE (encoder + lead-wise decoder)
def _st_mem(variant: str, **overrides: Any) -> nn.Module:
  return st_mem.STMEM(**{**st_mem.decode_variant(variant), **overrides})


@MODELS.register("st_mem_encoder")  # encoder alone (embeddings, probes, fine-tuning)
def _st_mem_encoder(variant: str, **overrides: Any) -> nn.Module:
  cfg = {k: v for k, v in st_mem.decode_variant(variant).items()
         if not k.startswith("decoder_")}
  return st_mem.STMEMEncoder(**{**cfg, **overrides})


@MODELS.register("ecg_fm")  # wav2vec 2.0 pretraining model (encoder + quantiser + heads)
def _ecg_fm(variant: str, **overrides: Any) -> nn.Module:
  return ecg_fm.ECGFM(**{**ecg_fm.decode_variant(variant), **overrides})


@MODELS.register("ecg_fm_encoder")  # encoder alone
def _ecg_fm_encoder(variant: str, **overrides: Any) -> nn.Module:
  return ecg_fm.ECGFMEncoder(**{**ecg_fm.encoder_fields(variant), **overrides})


@MODELS.register("net1d")  # ECGFounder / AnyECG-CCTA backbone ("ecgfounder", "8m", "mu")
def _net1d(variant: str, **overrides: Any) -> nn.Module:
  return net1d.Net1D(**{**net1d.decode_variant(variant), **overrides})


@MODELS.register("resnet1d")  # 1-D ResNet on (B, leads, T) ("resnet1d18|34|50", "mu")
def _resnet1d(variant: str, **overrides: Any) -> nn.Module:
  return resnet.ResNet1D(**{**resnet.decode_variant(variant, ndim=1), **overrides})


@MODELS.register("resnet2d")  # 2-D ResNet on images, EIANet attention ("resnet2d50[_sa]", "mu")
def _resnet2d(variant: str, **overrides: Any) -> nn.Module:
  return resnet.ResNet2D(**{**resnet.decode_variant(variant, ndim=2), **overrides})


# Encoders that embed each lead by its canonical index (so a lead subset needs `lead_idx`).
_LEAD_TABLE = (st_mem.STMEMEncoder, st_mem.STMEM)


def has_lead_table(module: nn.Module) -> bool:
  """Whether `module` reads `lead_idx` (a learnt embedding per canonical lead)."""
  return isinstance(module, _LEAD_TABLE)


def build_model(name: str, variant: str, **overrides: Any) -> nn.Module:
  """Model `name` at size `variant` (e.g. "st_mem", "B/75"); overrides replace module fields."""
  return MODELS.get(name)(variant, **overrides)
