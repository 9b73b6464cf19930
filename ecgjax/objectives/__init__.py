"""Objectives: what the engine trains. `build(config)` picks one by `config.objective`."""

from __future__ import annotations

from typing import Callable

import ml_collections

from ecgjax import registry
from ecgjax.errors import ConfigError
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
    raise ConfigError(f"config.objective={config.objective!r} is unknown; "
                     f"available: {sorted(_REGISTRY)}")
  return _REGISTRY[config.objective](config)


def _load_builtin() -> None:
  # Every module of this package may register objectives; they are found by name
  # (`ecgjax.registry`, as formats and evaluators are), so adding an objective is one new
  # file and no list, and `ecgjax.objectives.base` stays importable without the models.
  registry.load_all(__name__)


__all__ = ["GradCombiner", "LossAux", "Objective", "build", "register"]
