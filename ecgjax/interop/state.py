"""Shared pieces of the PyTorch state-dict importers: a key reader that records use, checks.

Everything here works on plain NumPy state dicts ({key: array}); torch is only needed to read a
checkpoint file (`interop.torch_io`).
"""

from __future__ import annotations

from collections.abc import Mapping
import re
from typing import Any

import jax
import numpy as np

# Keys under which training scripts nest the weights ({'state_dict': ...}, {'model': ...}).
_NESTING = ("state_dict", "model", "model_state_dict", "module", "net", "network")


class StateReader:
  """Hands out state-dict entries as float32 arrays and records what was missing or used."""

  def __init__(self, state: Mapping[str, Any]):
    self.state = state
    self.used: set[str] = set()
    self.missing: list[str] = []
    # id of every array handed out -> the checkpoint key it came from, so that a shape problem
    # found later on the param tree can be reported under the key the user knows.
    self.origin: dict[int, str] = {}

  def tag(self, value: np.ndarray | None, key: str) -> np.ndarray | None:
    """Records that `value` came from checkpoint `key`; returns it."""
    if value is not None:
      self.origin[id(value)] = key
    return value

  def get(self, key: str) -> np.ndarray | None:
    """The entry as float32, or None (and the key recorded as missing)."""
    if key not in self.state:
      self.missing.append(key)
      return None
    self.used.add(key)
    return self.tag(np.array(self.state[key], np.float32), key)

  def linear(self, key: str) -> dict[str, Any]:
    """torch Linear weight (out, in) + bias -> Flax Dense {kernel (in, out), bias}.

    Holds for a fused qkv projection too when its output axis is laid out (3, heads, head_dim)
    and the Flax side reshapes its output the same way (as ST-MEM's does).
    """
    w = self.get(f"{key}.weight")
    kernel = None if w is None else self.tag(np.ascontiguousarray(w.T), f"{key}.weight")
    return {"kernel": kernel, "bias": self.get(f"{key}.bias")}

  def conv_kernel(self, key: str) -> np.ndarray | None:
    """torch Conv1d weight (out, in/groups, k) -> Flax Conv kernel (k, in/groups, out).

    Both split the output channels into contiguous groups, so no regrouping is needed.
    """
    w = self.get(key)
    if w is None:
      return None
    if w.ndim != 3:
      raise ValueError(f"{key}: a Conv1d weight has 3 axes (out, in/groups, k), got {w.shape}")
    return self.tag(np.ascontiguousarray(w.transpose(2, 1, 0)), key)

  def norm(self, key: str) -> dict[str, Any]:
    """torch LayerNorm/GroupNorm weight + bias -> Flax {scale, bias}."""
    return {"scale": self.get(f"{key}.weight"), "bias": self.get(f"{key}.bias")}


def count_indexed(state: Mapping[str, Any], pattern: str) -> int:
  """1 + the largest index captured by `pattern` over the keys (0 if none match)."""
  found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
  return max(found) + 1 if found else 0


def is_state_dict(obj: Any) -> bool:
  """A non-empty mapping of string keys whose values include at least one array."""
  return (isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj)
          and any(hasattr(v, "shape") for v in obj.values()))


def unwrap_state_dict(obj: Any) -> tuple[dict[str, Any], list[str]]:
  """(state dict, the nesting keys walked) of a loaded checkpoint; strips DataParallel's
  'module.' prefix. Raises ValueError when no state dict is found."""
  path: list[str] = []
  while isinstance(obj, Mapping) and not is_state_dict(obj):
    inner = next((k for k in _NESTING if isinstance(obj.get(k), Mapping)), None)
    if inner is None:
      break
    path.append(inner)
    obj = obj[inner]
  if not is_state_dict(obj):
    top = sorted(obj)[:20] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"no state dict found in the checkpoint (walked {path or 'nothing'}; "
                     f"top-level keys: {top})")
  state = {k: v for k, v in obj.items() if hasattr(v, "shape")}
  if state and all(k.startswith("module.") for k in state):
    state = {k[len("module."):]: v for k, v in state.items()}
  return state, path


def find_prefix(state: Mapping[str, Any], anchor: str) -> str | None:
  """The shortest prefix P with P + anchor a key (e.g. 'encoder.' in a fine-tuned model)."""
  hits = [k[:-len(anchor)] for k in state if k.endswith(anchor)]
  hits = [p for p in hits if not p or p.endswith(".")]
  return min(hits, key=len) if hits else None


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """'/'-joined paths of a nested dict -> leaves; None leaves are kept (unlike jax.tree)."""
  if isinstance(tree, Mapping):
    out: dict[str, Any] = {}
    for k, v in tree.items():
      out.update(flatten(v, f"{prefix}{k}/"))
    return out
  return {prefix[:-1]: tree}


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Inverse of flatten."""
  tree: dict[str, Any] = {}
  for path, v in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = v
  return tree


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
