"""Train / validation / test splits for fine-tuning; no patient is ever on two sides.

  groupcv  K-fold stratified GROUPED cross-validation by patient id (stratified on the
           multi-label pattern, `ecgjax.eval.protocols.group_kfold`). Inside each fold's
           training side a further grouped split holds out `val_fraction` of the patients
           as the VALIDATION part that picks the checkpoint: the test fold is never looked
           at before the final prediction (AnyECG-CCTA's code selects on it: a leak).
  folds    the data's own folds: `test_folds` score, `val_folds` select (or, when empty, a
           grouped `val_fraction` of the remaining records), the rest train.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np

from ecgjax.eval import protocols

SPLITS = ("groupcv", "folds")


@dataclasses.dataclass(frozen=True)
class Split:
  """Record indices (into the source) of one training run."""
  index: int  # cv fold (0 for a single split)
  train: np.ndarray
  val: np.ndarray
  test: np.ndarray

  @property
  def name(self) -> str:
    """Directory name of this split's run."""
    return f"split{self.index}"


def check_disjoint(patients: np.ndarray, split: Split) -> None:
  """Raises ValueError if a patient appears in two of train / val / test."""
  parts = {"train": split.train, "val": split.val, "test": split.test}
  names = list(parts)
  for a in range(3):
    for b in range(a + 1, 3):
      shared = np.intersect1d(patients[parts[names[a]]], patients[parts[names[b]]])
      if shared.size:
        raise ValueError(f"split {split.index}: patients {shared[:3].tolist()} are in both "
                         f"{names[a]} and {names[b]}")


def _validation_part(idx: np.ndarray, labels: np.ndarray, patients: np.ndarray,
                     val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, val) of `idx`: one fold of a grouped stratified split, ~val_fraction of it."""
  if not 0 < val_fraction < 1:
    raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
  k = max(2, int(round(1.0 / val_fraction)))
  tr, va = protocols.group_kfold(labels[idx], patients[idx], k, seed)[0]
  return np.sort(idx[tr]), np.sort(idx[va])


def make_splits(metadata: dict[str, np.ndarray], good: np.ndarray, *, split: str,
                n_folds: int = 5, val_fraction: float = 0.2, seed: int = 0,
                test_folds: Sequence[int] = (), val_folds: Sequence[int] = ()) -> list[Split]:
  """The splits of `split` over the records `good` (indices of readable records)."""
  if split not in SPLITS:
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
  good = np.asarray(good, np.int64)
  labels = np.asarray(metadata["labels"], np.float32)
  patients = np.asarray(metadata["patient_id"]).astype(str)
  out: list[Split] = []
  if split == "groupcv":
    folds = protocols.group_kfold(labels[good], patients[good], n_folds, seed)
    for f, (rest, test) in enumerate(folds):
      train, val = _validation_part(good[rest], labels, patients, val_fraction,
                                    protocols.derive_seed(seed, f))
      out.append(Split(f, train, val, np.sort(good[test])))
  else:
    fold = np.asarray(metadata["fold"], np.int64)[good]
    if not len(test_folds):
      raise ValueError("split 'folds' needs test_folds (e.g. --config.test_folds=8)")
    is_test = np.isin(fold, np.asarray(test_folds))
    is_val = np.isin(fold, np.asarray(val_folds)) & ~is_test
    rest = good[~is_test & ~is_val]
    if len(val_folds):
      train, val = np.sort(rest), np.sort(good[is_val])
    else:
      train, val = _validation_part(rest, labels, patients, val_fraction, seed)
    out.append(Split(0, train, val, np.sort(good[is_test])))
  for s in out:
    if not (s.train.size and s.val.size and s.test.size):
      raise ValueError(f"split {s.index} has an empty side: train {s.train.size}, "
                       f"val {s.val.size}, test {s.test.size} records")
    check_disjoint(patients, s)
  return out
