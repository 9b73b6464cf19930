"""Hooks: what differs between runs of the one loop (`ecgjax.train.loop.run`).

The loop itself trains, logs, checkpoints and stops on preemption the same way for every
run; a hook adds one thing at chosen steps (an evaluation, a picture, keep-best) or at the
end (the export). Evaluators are plug-ins: `config.evals.<name>.type` names a module of
`ecgjax.eval.evaluators` (found by name, as data formats are), whose `Evaluator` class is
wrapped in an `EvalHook` that logs its results as `eval/<name>/<key>` rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import math
from typing import Any

import jax
import ml_collections
from absl import logging

from ecgjax import registry
from ecgjax.errors import ConfigError
from ecgjax.train import metrics as metrics_lib
from ecgjax.train.step import check_finite

EVALUATORS = "ecgjax.eval.evaluators"
State = dict[str, Any]


class Hook:
  """Runs after the train step of the steps `due` selects, and once when training ends."""

  every_steps: int = 0  # 0: never periodically
  at_last_step: bool = True  # also after the run's last step

  def due(self, step: int, total_steps: int) -> bool:
    """Whether the hook runs after `step`."""
    return bool((self.every_steps and step % self.every_steps == 0)
                or (self.at_last_step and step == total_steps))

  def __call__(self, step: int, state: State) -> Mapping[str, Any] | None:
    """Does the hook's work; metrics it returns are logged at `step` (process 0 writes)."""
    del step, state
    return None

  def end(self, step: int, state: State) -> None:
    """After the last step, when the run finished (not when it was preempted)."""
    del step, state

  def close(self) -> None:
    """Releases what the hook holds; called however the run ended."""


@dataclasses.dataclass
class EvalContext:
  """What an evaluator may use: the run's mesh, objective, state layout and contract."""
  mesh: Any
  objective: Any
  shardings: Any
  preprocessing: Any  # the training input contract (`ecgjax.data.Preprocessing`)
  workdir: str
  seed: int = 0
  extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # recipe-specific inputs


class EvalHook(Hook):
  """An evaluator run every `every_steps` steps (and at the end when it asks to)."""

  def __init__(self, name: str, evaluator: Any):
    self.name, self.evaluator = name, evaluator
    self.every_steps = int(getattr(evaluator, "every_steps", 0) or 0)
    self.at_last_step = bool(getattr(evaluator, "at_last_step", True))

  def __call__(self, step: int, state: State) -> dict[str, Any]:
    out = dict(self.evaluator.run(state, step) or {})
    return {f"eval/{self.name}/{k}": v for k, v in out.items()}

  def close(self) -> None:
    close = getattr(self.evaluator, "close", None)
    if close is not None:
      close()


class KeepBest(Hook):
  """Runs an evaluator every `every_steps` (and at the last step) and keeps the best model.

  When `metric` (higher is better) improves, the model state (params and collections, no
  optimizer moments) is saved to `checkpointer` under the step; every evaluation is one line
  of `history_path` with `"best"` saying whether it was kept. Fine-tuning selects its epoch
  this way; a resumed run passes the history it had, so "best so far" survives restarts.
  """

  def __init__(self, evaluator: Any, checkpointer: Any, *, every_steps: int, history_path: str,
               metric: str = "score", history: Sequence[dict[str, Any]] = (),
               describe: Callable[[int], dict[str, Any]] | None = None, name: str = "",
               log_name: str = "validation score"):
    self.evaluator, self.checkpointer, self.metric = evaluator, checkpointer, metric
    self.every_steps, self.history_path = int(every_steps), history_path
    self.describe, self.name, self.log_name = describe, name, log_name
    self.history = list(history)
    self.best = max(self.history, key=lambda h: h[metric]) if self.history else None

  def __call__(self, step: int, state: State) -> None:
    m = dict(self.evaluator.run(state, step))
    score = m[self.metric]
    improved = self.best is None or (math.isfinite(score) and not score <= self.best[self.metric])
    record = {**(self.describe(step) if self.describe else {}), "step": int(step), **m,
              "best": improved}
    if improved:
      check_finite(state, f"{self.name}, before saving the best state")
      self.checkpointer.save(step, {"params": state["params"],
                                    "collections": state["collections"]}, None)
      self.checkpointer.wait()
      self.best = record
    self.history.append(record)
    if process0():
      with open(self.history_path, "a") as f:
        f.write(json.dumps(metrics_lib.finite_or_null(record)) + "\n")
    epoch = f" (epoch {record['epoch']})" if "epoch" in record else ""
    logging.info("%s step %d%s: %s %.4f%s", self.name, step, epoch, self.log_name, score,
                 " (best)" if improved else "")
    return None


def make_evaluator(name: str, cfg: Any, context: EvalContext) -> Any:
  """The `Evaluator` of the plug-in module `cfg.type` (a ConfigError names a bad type)."""
  kind = cfg.get("type") if hasattr(cfg, "get") else None
  if not kind:
    raise ConfigError(f"config.evals.{name} has no 'type' (one of "
                      f"{', '.join(evaluator_types())})")
  module = registry.load(EVALUATORS, kind, f"evaluator type (config.evals.{name}.type)")
  return module.Evaluator(name, cfg, context)


def evaluator_types() -> tuple[str, ...]:
  """The evaluator plug-ins this ecgjax has (modules of ecgjax.eval.evaluators)."""
  return tuple(n for n in registry.names(EVALUATORS) if n != "base")


def build_evaluators(evals: ml_collections.ConfigDict | Mapping[str, Any] | None,
                     context: EvalContext) -> list[Hook]:
  """One EvalHook per enabled `config.evals.<name>`; a bad type or key names the evaluator."""
  hooks: list[Hook] = []
  for name in sorted(evals or {}):
    evaluator = make_evaluator(name, evals[name], context)
    kind = evals[name]["type"]
    if not evaluator.enabled:
      logging.info("evaluator %s (%s): off (%s)", name, kind, evaluator.why_off)
      continue
    logging.info("evaluator %s (%s): every %s steps%s", name, kind,
                 evaluator.every_steps or "-",
                 " and at the end" if getattr(evaluator, "at_last_step", True) else "")
    hooks.append(EvalHook(name, evaluator))
  return hooks


def process0() -> bool:
  """Whether this process writes files that every process would write alike."""
  return jax.process_index() == 0
