"""Objectives: what the engine trains. `build(config)` picks one by `config.objective`."""

from __future__ import annotations

from typing import Any

import ml_collections

from ecgjax import registry
from ecgjax.errors import ConfigError
from ecgjax.objectives.base import GradCombiner, LossAux, Objective

# Every module of this package may register objectives; they are found by name (the
# mechanism formats, models, augmentations and evaluators share), so adding an objective is
# one new file and no list, and `ecgjax.objectives.base` stays importable without the models.
OBJECTIVES = registry.Registry("objective", __name__)


def register(name: str, defaults: dict[str, Any] | None = None):
  """Decorator adding an objective factory `fn(config) -> Objective` under `name`.

  `defaults`: the objective's own config keys and their defaults, declared once in its module;
  configs hold them in the group `config.<name>` (`ecgjax.configs.objective(name)`).
  """
  def deco(fn):
    fn.DEFAULTS = dict(defaults or {})
    return OBJECTIVES.register(name)(fn)
  return deco


def defaults(name: str) -> dict[str, Any]:
  """The config keys (and defaults) of objective `name`: its `config.<name>` group."""
  return dict(OBJECTIVES.get(name, key="config.objective").DEFAULTS)


def options(config: ml_collections.ConfigDict, name: str) -> dict[str, Any]:
  """`config.<name>` as a dict: the objective's own keys (ConfigError when the group is absent)."""
  if name not in config:
    raise ConfigError(f"config.{name}: missing; objective {name!r} reads its keys from this "
                      f"group (declare it with ecgjax.configs.objective({name!r}))")
  group = config[name]
  return {k: (tuple(v) if isinstance(v, list) else v) for k, v in group.items()}


def build(config: ml_collections.ConfigDict) -> Objective:
  """The objective named by `config.objective`."""
  return OBJECTIVES.get(config.objective, key="config.objective")(config)


__all__ = ["GradCombiner", "LossAux", "Objective", "build", "defaults", "options", "register"]
