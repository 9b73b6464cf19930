"""Objectives: what the engine trains. `build(config)` picks one by `config.objective`."""

from __future__ import annotations

import ml_collections

from ecgjax import registry
from ecgjax.objectives.base import GradCombiner, LossAux, Objective

# Every module of this package may register objectives; they are found by name (the
# mechanism formats, models, augmentations and evaluators share), so adding an objective is
# one new file and no list, and `ecgjax.objectives.base` stays importable without the models.
OBJECTIVES = registry.Registry("objective", __name__)


def register(name: str):
  """Decorator adding an objective factory `fn(config) -> Objective` under `name`."""
  return OBJECTIVES.register(name)


def build(config: ml_collections.ConfigDict) -> Objective:
  """The objective named by `config.objective`."""
  return OBJECTIVES.get(config.objective, key="config.objective")(config)


__all__ = ["GradCombiner", "LossAux", "Objective", "build", "register"]
