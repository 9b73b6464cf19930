"""Reading PyTorch checkpoint files safely: `torch.load(weights_only=True)`, tensors -> NumPy.

torch is an optional extra (`pip install ecgjax[torch]`) and is imported only here, only when a
file is read; nothing else in ecgjax, and no converted export, needs it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
import hashlib
import importlib
import os
import pickle
from typing import Any

import numpy as np
from ecgjax.errors import UserError

INSTALL_HINT = ("reading PyTorch checkpoints needs torch, an optional extra: "
                "pip install 'ecgjax[torch]' (CPU is enough)")


class CheckpointError(UserError, ValueError):
  """A checkpoint file that cannot be read safely, with what to do about it."""


def import_torch():
  """The torch module, or ImportError with the install hint."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(INSTALL_HINT) from e
  return torch


def _safe_extras() -> list[Any]:
  """Harmless classes that old checkpoints pickle beside the tensors (fairseq's argparse
  Namespace of hyper-parameters; NumPy arrays and scalars in training metrics): plain data whose
  reconstruction runs no code of the file's choosing."""
  extras: list[Any] = [argparse.Namespace, np.dtype, np.ndarray]
  extras += [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32",
                                         "uint8", "bool")]
  multiarray = importlib.import_module("numpy._core.multiarray")
  # Files written under NumPy 1.x name these numpy.core.multiarray.*: the same functions.
  for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
    extras += [(getattr(multiarray, f), f"{module}.{f}") for f in ("scalar", "_reconstruct")]
  return extras


def _unsafe_globals(torch, path: str) -> str:
  """The classes/functions a file would need beyond the allowed ones (read, never run)."""
  try:
    names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
  except Exception:  # pylint: disable=broad-except
    return "unknown"
  allowed = {n if isinstance(n, str) else f"{n.__module__}.{n.__qualname__}"
             for n in (e[1] if isinstance(e, tuple) else e for e in _safe_extras())}
  return ", ".join(n for n in names if n not in allowed) or "unknown"


def _to_numpy(obj: Any, torch) -> Any:
  """Tensors -> NumPy (bfloat16/float16 widened to float32); containers walked; rest as is."""
  if isinstance(obj, torch.Tensor):
    t = obj.detach().cpu()
    if t.is_floating_point() and t.dtype != torch.float64:
      t = t.to(torch.float32)
    return t.numpy()
  if isinstance(obj, Mapping):
    return {k: _to_numpy(v, torch) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_to_numpy(v, torch) for v in obj]
  if isinstance(obj, argparse.Namespace):
    return {k: _to_numpy(v, torch) for k, v in vars(obj).items()}
  return obj


def load_checkpoint(path: str) -> Any:
  """A checkpoint file's content with every tensor as a NumPy array.

  Uses torch.load(weights_only=True): tensors, containers, primitive types and the few plain
  data classes of `_safe_extras` only; a file that would need any other class (and so could run
  code while loading) is refused with CheckpointError naming it.
  """
  if not os.path.isfile(path):
    raise CheckpointError(f"no such checkpoint file: {path}")
  torch = import_torch()
  try:
    with torch.serialization.safe_globals(_safe_extras()):
      obj = torch.load(path, map_location="cpu", weights_only=True)
  except pickle.UnpicklingError:
    raise CheckpointError(
        f"{path} cannot be loaded safely: it stores Python objects beyond tensors and plain "
        f"data ({_unsafe_globals(torch, path)}), and ecgjax never unpickles arbitrary objects "
        f"(torch.load weights_only=True). If you trust the file, load it where it was written "
        f"(weights_only=False), save only its state dict, e.g. "
        f"torch.save(checkpoint['model'], 'weights.pt'), and convert weights.pt") from None
  except (RuntimeError, EOFError, OSError) as e:
    raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {e}") from None
  return _to_numpy(obj, torch)


def sha256_of(path: str) -> str:
  """Hex sha256 of a file (recorded in the export, so a conversion can be traced)."""
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()
