"""Objectives: what the engine trains. `build(config)` picks one by `config.objective`."""

from __future__ import annotations

from typing import Callable

import ml_collections

from ecgjax.objectives.base import GradCombiner, LossAux, Objective

_REGISTRY: dict[str, Callable[[ml_collections.ConfigDict], Objective]] = {}


def register(name: str):
  """Decorator adding an objective factory `fn(config) -> Objective` under `name`."""
  def deco(fn):
    _REGISTRY[name] = fn
    return fn
  return deco


def build(config: ml_collections.ConfigDict) -> Objective:
  """The objective named by `config.objective`."""
  _load_builtin()
  if config.objective not in _REGISTRY:
    raise ValueError(f"config.objective={config.objective!r} is unknown; "
                     f"available: {sorted(_REGISTRY)}")
  return _REGISTRY[config.objective](config)


def _load_builtin() -> None:
  # Imported lazily so `ecgjax.objectives.base` stays importable without the models.
  from ecgjax.objectives import contrastive, hybrid, masked_autoencoder, wav2vec2  # noqa: F401
  from ecgjax.finetune import objective  # noqa: F401  ("supervised")


__all__ = ["GradCombiner", "LossAux", "Objective", "build", "register"]
