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

from ecgjax import tree as tree_lib

# Keys under which training scripts nest the weights, in order of preference when a checkpoint
# holds several candidates (ECGFounder's {'state_dict': ...}, fairseq's {'model': ...}).
_NESTING = ("state_dict", "model", "model_state_dict", "module", "net", "network", "weights",
            "params", "ema", "model_ema", "state")
# Prefixes a whole state dict may carry (DataParallel / DDP, Lightning-style wrappers,
# torch.compile), stripped when EVERY key has them.
_PREFIXES = ("module.", "model.", "_orig_mod.")
# Per-parameter optimizer moments (torch and fairseq optimizers): a mapping of these is
# optimizer state, never weights, whatever its shapes.
_OPTIMIZER_KEYS = frozenset({"exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer",
                             "step", "square_avg", "acc_delta", "sum", "ax", "eta", "mu",
                             "prev", "step_size", "exp_inf"})
_MAX_DEPTH = 4

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


def _is_array(v: Any) -> bool:
  # Tensors arrive as NumPy arrays (torch_io); NumPy scalars (np.float64 metrics) are
  # np.generic, not arrays, and a 0-d array (BatchNorm's num_batches_tracked) still counts.
  return isinstance(v, np.ndarray)


def is_state_dict(obj: Any) -> bool:
  """A flat mapping of string keys to arrays, with at least one array of rank >= 1, that is
  not optimizer state (keys like exp_avg / momentum_buffer)."""
  if not (isinstance(obj, Mapping) and obj and all(isinstance(k, str) for k in obj)):
    return False
  values = list(obj.values())
  if any(isinstance(v, (Mapping, list, tuple)) for v in values):
    return False
  if not all(_is_array(v) or v is None or isinstance(v, (int, float, str, np.generic))
             for v in values):
    return False
  if not any(_is_array(v) and v.ndim >= 1 for v in values):
    return False
  return not set(obj) <= _OPTIMIZER_KEYS


def _describe(value: Any) -> str:
  """What an ignored checkpoint entry is, in a few words."""
  if _is_array(value):
    return f"array {tuple(value.shape)}"
  if isinstance(value, (bool, int, float, str, np.generic)) or value is None:
    text = repr(value.item() if isinstance(value, np.generic) else value)
    return f"scalar {text[:40]}"
  if isinstance(value, Mapping):
    n = _count_arrays(value)
    kind = ("optimizer state" if "param_groups" in value or "state" in value and
            isinstance(value.get("state"), Mapping) and n else "mapping")
    return f"{kind}, {len(value)} entries, {n} arrays"
  if isinstance(value, (list, tuple)):
    return f"list of {len(value)}, {_count_arrays(value)} arrays"
  return type(value).__name__


def _count_arrays(obj: Any, depth: int = 0) -> int:
  if _is_array(obj):
    return 1
  if depth > 8:
    return 0
  if isinstance(obj, Mapping):
    return sum(_count_arrays(v, depth + 1) for v in obj.values())
  if isinstance(obj, (list, tuple)):
    return sum(_count_arrays(v, depth + 1) for v in obj)
  return 0


def _candidates(obj: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  """Paths (key tuples) of every state dict inside a loaded checkpoint, outermost first;
  optimizer and scheduler states (int-keyed `state`, `param_groups`) are never entered."""
  if is_state_dict(obj):
    return [path]
  if not isinstance(obj, Mapping) or len(path) >= _MAX_DEPTH or "param_groups" in obj:
    return []
  found = []
  for k, v in obj.items():
    if isinstance(k, str) and isinstance(v, Mapping):
      found += _candidates(v, path + (k,))
  return found


def _rank(path: tuple[str, ...]) -> tuple[int, int]:
  # Known nesting names first (in _NESTING's order), shallower before deeper.
  first = _NESTING.index(path[0]) if path and path[0] in _NESTING else len(_NESTING)
  return (0 if not path else 1 + first, len(path))


def unwrap_state_dict(obj: Any) -> tuple[dict[str, Any], list[str]]:
  """(state dict, the nesting keys walked) of a loaded checkpoint; see `unwrap_checkpoint`."""
  state, path, _ = unwrap_checkpoint(obj)
  return state, path


def unwrap_checkpoint(obj: Any) -> tuple[dict[str, Any], list[str], list[str]]:
  """(state dict, nesting keys walked, what was ignored) of a loaded checkpoint.

  The weights are found by structure: the flat string-keyed mapping of arrays inside the
  checkpoint (itself, or nested under e.g. 'state_dict' or 'model'), never optimizer moments,
  scheduler state or metrics. Layouts covered: a plain state dict; ECGFounder's
  util.save_checkpoint {'epoch', 'step', 'state_dict', 'optimizer', 'scheduler', 'val_auroc'};
  fairseq's trainer {'args', 'cfg', 'model', 'criterion', 'optimizer_history', 'task_state',
  'extra_state', 'last_optimizer_state'}; {'model': ..., 'epoch': ...}. A whole-dict prefix
  'module.' / 'model.' / '_orig_mod.' is stripped. Every other entry (and every non-array
  value inside the state dict) is listed in the third element, with what it is.
  Raises ValueError when no state dict is found.
  """
  found = sorted(_candidates(obj), key=_rank)
  if not found:
    top = sorted(map(str, obj))[:20] if isinstance(obj, Mapping) else type(obj).__name__
    raise ValueError(f"no state dict (a mapping of parameter names to tensors) found in the "
                     f"checkpoint; top-level keys: {top}")
  path = found[0]
  ignored: list[str] = []
  node = obj
  for depth, key in enumerate(path):
    for k, v in node.items():
      if k != key:
        where = ".".join(map(str, path[:depth] + (k,)))
        ignored.append(f"{where} ({_describe(v)})")
    node = node[key]
  state = {k: v for k, v in node.items() if _is_array(v)}
  prefix_path = ".".join(path)
  ignored += [f"{prefix_path + '.' if path else ''}{k} ({_describe(v)})"
              for k, v in node.items() if not _is_array(v)]
  stripped = True
  while stripped and state:
    stripped = False
    for p in _PREFIXES:
      if all(k.startswith(p) for k in state):
        state = {k[len(p):]: v for k, v in state.items()}
        stripped = True
  return state, list(path), ignored


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


def check_template(tree: Any, template: Any, what: str) -> None:
  """Raise listing every path whose presence or shape differs from `template`."""
  diff = tree_lib.compare(tree, template)
  if not diff.ok:
    raise ValueError(f"{what} checkpoint does not fit the model:\n  "
                     + "\n  ".join(diff.lines("checkpoint", "model")))
