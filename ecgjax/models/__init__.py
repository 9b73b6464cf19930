"""Model registry: build_model(name, variant, **overrides)."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from ecgjax.errors import ConfigError
from ecgjax.models import ecg_fm, net1d, resnet, st_mem


def _st_mem(variant: str, **overrides: Any) -> nn.Module:
  return st_mem.STMEM(**{**st_mem.decode_variant(variant), **overrides})


def _st_mem_encoder(variant: str, **overrides: Any) -> nn.Module:
  cfg = {k: v for k, v in st_mem.decode_variant(variant).items()
         if not k.startswith("decoder_")}
  return st_mem.STMEMEncoder(**{**cfg, **overrides})


def _ecg_fm(variant: str, **overrides: Any) -> nn.Module:
  return ecg_fm.ECGFM(**{**ecg_fm.decode_variant(variant), **overrides})


def _ecg_fm_encoder(variant: str, **overrides: Any) -> nn.Module:
  return ecg_fm.ECGFMEncoder(**{**ecg_fm.encoder_fields(variant), **overrides})


def _net1d(variant: str, **overrides: Any) -> nn.Module:
  return net1d.Net1D(**{**net1d.decode_variant(variant), **overrides})


def _resnet1d(variant: str, **overrides: Any) -> nn.Module:
  return resnet.ResNet1D(**{**resnet.decode_variant(variant, ndim=1), **overrides})


def _resnet2d(variant: str, **overrides: Any) -> nn.Module:
  return resnet.ResNet2D(**{**resnet.decode_variant(variant, ndim=2), **overrides})


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "st_mem": _st_mem,  # full MAE (encoder + lead-wise decoder)
    "st_mem_encoder": _st_mem_encoder,  # encoder alone (embeddings, probes, fine-tuning)
    "net1d": _net1d,  # ECGFounder / AnyECG-CCTA backbone ("ecgfounder", "8m", "mu")
    "resnet1d": _resnet1d,  # 1-D ResNet on (B, leads, T) ("resnet1d18|34|50", "mu")
    "resnet2d": _resnet2d,  # 2-D ResNet on images, EIANet attention ("resnet2d50[_sa]", "mu")
    "ecg_fm": _ecg_fm,  # wav2vec 2.0 pretraining model (encoder + quantiser + heads)
    "ecg_fm_encoder": _ecg_fm_encoder,  # encoder alone
}


def build_model(name: str, variant: str, **overrides: Any) -> nn.Module:
  """Model `name` at size `variant` (e.g. "st_mem", "B/75"); overrides replace module fields."""
  if name not in _BUILDERS:
    raise ConfigError(f"unknown model {name!r}; known: {', '.join(sorted(_BUILDERS))}")
  return _BUILDERS[name](variant, **overrides)
