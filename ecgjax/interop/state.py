"""Shared pieces of the PyTorch state-dict importers: a key reader that records use, checks."""

from __future__ import annotations

from collections.abc import Mapping
import re
from typing import Any

import jax
import numpy as np


class StateReader:
  """Hands out state-dict entries as float32 arrays and records what was missing or used."""

  def __init__(self, state: Mapping[str, Any]):
    self.state = state
    self.used: set[str] = set()
    self.missing: list[str] = []

  def get(self, key: str) -> np.ndarray | None:
    """The entry as float32, or None (and the key recorded as missing)."""
    if key not in self.state:
      self.missing.append(key)
      return None
    self.used.add(key)
    return np.asarray(self.state[key], np.float32)

  def linear(self, key: str) -> dict[str, Any]:
    """torch Linear weight (out, in) + bias -> Flax Dense {kernel (in, out), bias}."""
    w = self.get(f"{key}.weight")
    return {"kernel": None if w is None else np.ascontiguousarray(w.T),
            "bias": self.get(f"{key}.bias")}


def count_indexed(state: Mapping[str, Any], pattern: str) -> int:
  """1 + the largest index captured by `pattern` over the keys (0 if none match)."""
  found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
  return max(found) + 1 if found else 0


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {"/".join(str(getattr(k, "key", k)) for k in path): np.shape(v) for path, v in leaves}


def check_template(tree: Any, template: Any, what: str) -> None:
  """Raise listing every path whose presence or shape differs from `template`."""
  got, want = _shapes(tree), _shapes(template)
  problems = [f"missing {k} {want[k]}" for k in sorted(set(want) - set(got))]
  problems += [f"unexpected {k} {got[k]}" for k in sorted(set(got) - set(want))]
  problems += [f"shape of {k}: checkpoint {got[k]} vs model {want[k]}"
               for k in sorted(set(got) & set(want)) if got[k] != want[k]]
  if problems:
    raise ValueError(f"{what} checkpoint does not fit the model:\n  " + "\n  ".join(problems))
