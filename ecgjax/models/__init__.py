"""Model registry: build_model(name, variant, **overrides)."""

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from ecgjax.models import st_mem


def _st_mem(variant: str, **overrides: Any) -> nn.Module:
  return st_mem.STMEM(**{**st_mem.decode_variant(variant), **overrides})


def _st_mem_encoder(variant: str, **overrides: Any) -> nn.Module:
  cfg = {k: v for k, v in st_mem.decode_variant(variant).items()
         if not k.startswith("decoder_")}
  return st_mem.STMEMEncoder(**{**cfg, **overrides})


_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "st_mem": _st_mem,  # full MAE (encoder + lead-wise decoder)
    "st_mem_encoder": _st_mem_encoder,  # encoder alone (embeddings, probes, fine-tuning)
}


def build_model(name: str, variant: str, **overrides: Any) -> nn.Module:
  """Model `name` at size `variant` (e.g. "st_mem", "B/75"); overrides replace module fields."""
  if name not in _BUILDERS:
    raise ValueError(f"unknown model {name!r}; known: {', '.join(sorted(_BUILDERS))}")
  return _BUILDERS[name](variant, **overrides)
