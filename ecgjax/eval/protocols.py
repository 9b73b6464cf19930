"""Evaluation protocols: which records train a probe and which score it.

  split      one explicit train/test split (two data specs, or test folds of one set).
  reshuffle  R stratified 80/20 development/test splits (the prehospital-ACS study's
             protocol: 10 reshuffles, mean +- std).
  groupcv    stratified GROUP K-fold: records grouped by patient, so no patient is ever on
             both sides; every record is scored once per repeat (out of fold).

Multi-label stratification: each record's label pattern (the tuple of its 0/1 labels) is
one stratum; patterns held by fewer records than there are folds are merged into one
"rare" stratum (so sklearn can stratify at all), and `StratifiedGroupKFold` balances the
strata across folds while keeping groups whole. This keeps every frequent label
combination, and so every label's prevalence, close to the whole set's; it is greedy, so
small sets can still be uneven (iterative stratification would balance single labels a
little better but cannot keep patients whole as simply). Reshuffles are the first fold of a
freshly shuffled grouped split with 1/test_fraction folds, so they keep patients whole too
(with one record per patient this is plain stratified 80/20 reshuffling).

Label efficiency (`subsample_train`): a training split cut to n records, with at least
`min_positives` positives (and negatives) of every label where the split has them, the rest
drawn at random.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import dataclasses
import warnings

import numpy as np
from sklearn import model_selection
from ecgjax.errors import UserError

PROTOCOLS = ("split", "reshuffle", "groupcv")
# Positives (and negatives) of each label a label-efficiency subsample keeps at least.
MIN_POSITIVES = 3


class ProtocolError(UserError, ValueError):
  """A protocol that cannot be run on the records given (too few records, a leak...)."""


@dataclasses.dataclass(frozen=True)
class Split:
  """One train/test partition: indices into the record table."""
  repeat: int  # which repeat of the protocol (seed x repeat), 0-based
  cv_fold: int  # fold within the repeat (0 for single splits)
  seed: int  # the seed this split and its probe use
  train: np.ndarray
  test: np.ndarray


def derive_seed(seed: int, *keys: int) -> int:
  """A 31-bit seed for (seed, keys): repeats and folds get independent streams."""
  return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1)[0] >> 1)


def strata(labels: np.ndarray, n_folds: int) -> np.ndarray:
  """Integer stratum per record: its label pattern, rare patterns (< n_folds) merged."""
  y = (np.asarray(labels) > 0.5).astype(np.int64)
  if y.ndim == 1:
    y = y[:, None]
  _, key, counts = np.unique(y, axis=0, return_inverse=True, return_counts=True)
  key = key.reshape(-1)
  rare = counts[key] < n_folds
  return np.where(rare, -1, key)


def group_kfold(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int
                ) -> list[tuple[np.ndarray, np.ndarray]]:
  """Stratified group K-fold (train, test) index pairs; raises if any group crosses sides."""
  groups = np.asarray(groups).astype(str)
  n_groups = len(np.unique(groups))
  if n_folds < 2:
    raise ProtocolError(f"group K-fold needs at least 2 folds, got {n_folds}")
  if n_groups < n_folds:
    raise ProtocolError(f"{n_folds} folds need at least {n_folds} patients; the records "
                        f"belong to {n_groups}")
  key = strata(labels, n_folds)
  cv = model_selection.StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed)
  with warnings.catch_warnings():
    # Merged rare strata can still be smaller than n_folds; the split is valid regardless.
    warnings.filterwarnings("ignore", message=".*least populated class.*")
    folds = list(cv.split(np.zeros(len(key)), key, groups))
  for train, test in folds:
    leak = np.intersect1d(groups[train], groups[test])
    if leak.size:  # cannot happen with sklearn's splitter; cheap insurance for the claim
      raise ProtocolError(f"patients on both sides of a split: {leak[:3].tolist()}")
    if not test.size:
      raise ProtocolError(f"a fold of {n_folds}-fold CV is empty: too few patients")
  return folds


def make_splits(protocol: str, labels: np.ndarray, groups: np.ndarray, *,
                seeds: Sequence[int] = (0,), repeats: int = 1, n_folds: int = 5,
                test_fraction: float = 0.2,
                test_mask: np.ndarray | None = None) -> list[Split]:
  """Every split of `protocol` for each seed x repeat (see the module docstring)."""
  if protocol not in PROTOCOLS:
    raise ProtocolError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
  if repeats < 1:
    raise ProtocolError(f"repeats must be >= 1, got {repeats}")
  n = len(labels)
  out: list[Split] = []
  run = 0
  for seed in seeds:
    for r in range(repeats):
      s = derive_seed(seed, r)
      if protocol == "split":
        if test_mask is None:
          raise ProtocolError("the split protocol needs a test set (--test or --split_folds)")
        test_mask = np.asarray(test_mask, bool)
        out.append(Split(run, 0, s, np.flatnonzero(~test_mask), np.flatnonzero(test_mask)))
      elif protocol == "reshuffle":
        if not 0.0 < test_fraction < 1.0:
          raise ProtocolError(f"test_fraction must be in (0, 1), got {test_fraction}")
        k = max(2, int(round(1.0 / test_fraction)))
        train, test = group_kfold(labels, groups, k, s)[0]
        out.append(Split(run, 0, s, train, test))
      else:
        for f, (train, test) in enumerate(group_kfold(labels, groups, n_folds, s)):
          out.append(Split(run, f, derive_seed(s, f), train, test))
      run += 1
  if any(not sp.train.size or not sp.test.size for sp in out):
    raise ProtocolError(f"a split of {n} records has an empty train or test side")
  return out


def parse_train_sizes(text: str) -> list[int | None]:
  """'25,50,100,all' -> [25, 50, 100, None] (None = the whole training split)."""
  sizes: list[int | None] = []
  for part in str(text).split(","):
    part = part.strip().lower()
    if not part:
      continue
    if part == "all":
      sizes.append(None)
      continue
    try:
      v = int(part)
    except ValueError:
      raise ValueError(f"bad train size {part!r}: expected record counts such as "
                       "25,50,100,all") from None
    if v < 2:
      raise ValueError(f"train size {v} is too small (at least 2 records)")
    sizes.append(v)
  if not sizes:
    raise ValueError(f"no train sizes in {text!r}")
  return sorted(set(sizes), key=lambda s: float("inf") if s is None else s)


def subsample_train(train: np.ndarray, labels: np.ndarray, size: int | None, seed: int, *,
                    min_positives: int = MIN_POSITIVES) -> np.ndarray:
  """`size` of the `train` indices: >= min_positives positives and negatives of every label.

  Labels are served rarest first from records not yet taken; the remaining places are
  filled uniformly at random. A label with fewer positives in the split keeps all of them.
  """
  train = np.asarray(train)
  if size is None or size >= train.size:
    return np.sort(train)
  y = (np.asarray(labels)[train] > 0.5)
  if y.ndim == 1:
    y = y[:, None]
  rng = np.random.default_rng(derive_seed(seed, size))
  taken = np.zeros(train.size, bool)
  # Rarest class of each label first: common classes are then usually already covered.
  order = np.argsort(np.minimum(y.sum(0), (~y).sum(0)), kind="stable")
  for j in order:
    for cls in (True, False):
      have = int(np.sum(taken & (y[:, j] == cls)))
      pool = np.flatnonzero(~taken & (y[:, j] == cls))
      extra = min(max(min_positives - have, 0), pool.size)
      if extra:
        taken[rng.choice(pool, extra, replace=False)] = True
  if taken.sum() > size:
    raise ProtocolError(f"train size {size} cannot keep {min_positives} positives and "
                        f"negatives of each of {y.shape[1]} label(s): that takes "
                        f"{int(taken.sum())} records; use a larger size")
  rest = np.flatnonzero(~taken)
  fill = size - int(taken.sum())
  if fill > 0:
    taken[rng.choice(rest, fill, replace=False)] = True
  return np.sort(train[taken])


def iter_label_efficiency(splits: Sequence[Split], labels: np.ndarray,
                          sizes: Sequence[int | None], *,
                          min_positives: int = MIN_POSITIVES
                          ) -> Iterator[tuple[int | None, Split]]:
  """(size, split with its training side cut to size) for every size and split."""
  for size in sizes:
    for sp in splits:
      train = subsample_train(sp.train, labels, size, derive_seed(sp.seed, 7),
                              min_positives=min_positives)
      yield size, dataclasses.replace(sp, train=train)
