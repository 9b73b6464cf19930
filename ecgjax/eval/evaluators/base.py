"""What every evaluator plug-in shares: declared config keys and the on/off rule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from ecgjax.errors import ConfigError


class Evaluator:
  """Base class: `DEFAULTS` declares every key of `config.evals.<name>` once.

  A key the evaluator does not declare is a ConfigError naming it (a misspelt
  `every_step` must not silently turn an evaluation off).
  """

  DEFAULTS: ClassVar[dict[str, Any]] = {"type": "", "every_steps": 0}
  at_last_step: bool = True

  def __init__(self, name: str, config: Mapping[str, Any] | Any, context: Any):
    given = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    unknown = sorted(set(given) - set(self.DEFAULTS))
    if unknown:
      raise ConfigError(f"config.evals.{name}: unknown key(s) {unknown} for type "
                        f"{given.get('type')!r}; known: {sorted(self.DEFAULTS)}")
    self.name, self.context = name, context
    self.config = {**self.DEFAULTS, **given}
    self.every_steps = int(self.config["every_steps"] or 0)
    if self.every_steps < 0:
      raise ConfigError(f"config.evals.{name}.every_steps must be >= 0, got {self.every_steps}")

  @property
  def enabled(self) -> bool:
    """Whether the evaluator runs at all (e.g. it has the data it needs)."""
    return True

  @property
  def why_off(self) -> str:
    """Why `enabled` is False, for the log."""
    return ""

  def run(self, state: dict[str, Any], step: int) -> dict[str, Any]:
    """Evaluates the train state at `step`; returns scalars (and short lists)."""
    raise NotImplementedError

  def close(self) -> None:
    """Releases cached data."""
