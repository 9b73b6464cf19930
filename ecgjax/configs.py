"""Shared helpers for `configs/*.py`: parse `:variant=B/75,runlocal` style arguments."""

from __future__ import annotations

from typing import Any

import ml_collections


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parse `k=v,flag` config arguments; every key must be declared in `defaults`.

  Values are coerced to the type of their default (a bare `flag` means True), so
  `configs/stmem.py:variant=S/75,runlocal` gives variant="S/75", runlocal=True.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f"unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not _:  # bare flag
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"config argument {key!r} expects a boolean, got {value!r}")
      out[key] = value.lower() in ("1", "true", "yes")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return ml_collections.ConfigDict(out)


def sibling_config(this_file: str, name: str):
  """Imports `configs/<name>.py` beside `this_file`: config files are loaded by path, not package."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"ecgjax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def evaluator(kind: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.evals.<name>` for the evaluator plug-in `kind` (ecgjax/eval/evaluators/<kind>.py):
  its keys and defaults as the plug-in declares them (once, in its DEFAULTS), then `overrides`."""
  from ecgjax import registry  # pylint: disable=g-import-not-at-top
  module = registry.load("ecgjax.eval.evaluators", kind, "evaluator type")
  defaults = dict(module.Evaluator.DEFAULTS)
  unknown = sorted(set(overrides) - set(defaults))
  if unknown:
    raise ValueError(f"evaluator {kind!r} has no key(s) {unknown}; known: {sorted(defaults)}")
  return ml_collections.ConfigDict({**defaults, **overrides, "type": kind})
