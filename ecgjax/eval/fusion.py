"""Early fusion of several embedding sources: align by record id, min-max, concatenate.

The prehospital-ACS study's recipe: each model's embeddings are min-max normalised with
statistics fitted on the TRAINING split only, then concatenated. Test values outside the
training range are kept as they are (no clipping), as sklearn's MinMaxScaler does; a
feature that is constant in training is only shifted (scale 1).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np
from ecgjax.errors import UserError


class FusionError(UserError, ValueError):
  """Embedding sources that cannot be fused (records missing, duplicate ids...)."""


@dataclasses.dataclass
class Block:
  """One embedding source: a name for messages and plots, record ids and (N, D) features."""
  name: str
  record_id: np.ndarray
  embeddings: np.ndarray


def _examples(ids: np.ndarray, k: int = 3) -> str:
  return ", ".join(repr(str(i)) for i in ids[:k]) + (", ..." if len(ids) > k else "")


def align(record_id: np.ndarray, block: Block, table_name: str, *,
          exact: bool = False) -> np.ndarray:
  """Row of `block` for each id of `record_id`; FusionError names missing (or extra) ids.

  exact: also reject records of the block that the table does not hold (two embedding
  files of one data set must describe the same records).
  """
  ids = np.asarray(block.record_id).astype(str)
  want = np.asarray(record_id).astype(str)
  uniq, counts = np.unique(ids, return_counts=True)
  if (counts > 1).any():
    dup = uniq[counts > 1]
    raise FusionError(f"{block.name}: {dup.size} record id(s) occur more than once "
                      f"(e.g. {_examples(dup)}); record ids must be unique")
  missing = np.setdiff1d(want, ids)
  extra = np.setdiff1d(ids, want) if exact else np.array([], str)
  if missing.size or extra.size:
    parts = []
    if missing.size:
      parts.append(f"lacks {missing.size} of the {want.size} records of {table_name} "
                   f"(e.g. {_examples(missing)})")
    if extra.size:
      parts.append(f"has {extra.size} record(s) that {table_name} lacks "
                   f"(e.g. {_examples(extra)})")
    raise FusionError(f"record ids do not match: {block.name} {' and '.join(parts)}; fused "
                      "sources must embed the same records")
  pos = {r: i for i, r in enumerate(ids)}
  return np.array([pos[r] for r in want], np.int64)


@dataclasses.dataclass
class MinMax:
  """Per-feature minimum and range fitted on training rows."""
  low: np.ndarray
  scale: np.ndarray

  def __call__(self, x: np.ndarray) -> np.ndarray:
    """(x - low) / scale."""
    return (np.asarray(x, np.float64) - self.low) / self.scale


def fit_minmax(x_train: np.ndarray) -> MinMax:
  """Min-max statistics of the training rows (constant features get scale 1)."""
  x = np.asarray(x_train, np.float64)
  if x.ndim != 2 or not x.shape[0]:
    raise FusionError(f"min-max needs (N > 0, D) training features, got {x.shape}")
  low, high = x.min(0), x.max(0)
  scale = high - low
  return MinMax(low, np.where(scale > 0, scale, 1.0))


def fuse(blocks: Sequence[np.ndarray], train: np.ndarray, test: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
  """Concatenated min-max features of the train and test rows; stats from train rows only.

  blocks: per source (N, D_i) features aligned to one record table; train/test: row indices.
  """
  if not blocks:
    raise FusionError("nothing to fuse: no embedding source")
  xs_train, xs_test = [], []
  for x in blocks:
    mm = fit_minmax(x[train])
    xs_train.append(mm(x[train]))
    xs_test.append(mm(x[test]))
  return np.concatenate(xs_train, 1), np.concatenate(xs_test, 1)
