"""What a probe run evaluates: the record table and one feature block per embedding source.

Records and labels come from the data specs when given (`--data`, or `--train` and
`--test`), else from the first embeddings file. Every source is matched to the table by
record id: an export embeds the specs' records itself (records it had to skip as bad are
dropped from the table, with a warning); an embeddings file must hold every record of the
table (and, when it is the table's only origin besides other files, exactly those).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import os
import time
from typing import Any

from absl import logging
import numpy as np

from ecgjax.eval import fusion
from ecgjax.eval.experiment import Table
from ecgjax.errors import UserError


class InputError(UserError, ValueError):
  """Inputs that cannot be evaluated together; the message says which and why."""


@dataclasses.dataclass
class Inputs:
  """The table, its feature blocks (rows aligned) and where everything came from."""
  table: Table
  blocks: list[np.ndarray]
  names: list[str]  # one per block: export directory or embeddings file
  test_mask: np.ndarray | None  # from --train/--test; None otherwise
  specs: list[str]
  exports: list[str]
  files: list[str]


def _table_from_meta(meta: dict[str, np.ndarray], label_names: Sequence[str]) -> Table:
  return Table(np.asarray(meta["record_id"]).astype(str),
               np.asarray(meta["patient_id"]).astype(str),
               np.asarray(meta["fold"]).astype(np.int64),
               np.asarray(meta["labels"], np.float32), tuple(str(n) for n in label_names))


def _concat(tables: Sequence[Table]) -> Table:
  cat = lambda k: np.concatenate([getattr(t, k) for t in tables])
  return Table(cat("record_id"), cat("patient_id"), cat("fold"), cat("labels"),
               tables[0].label_names)


def _keys(flag: str, ids: np.ndarray, prefixed: bool) -> np.ndarray:
  """Alignment keys: record ids, or "flag|id" when ids repeat between --train and --test."""
  ids = np.asarray(ids).astype(str)
  return np.char.add(f"{flag}|", ids) if prefixed else ids


def open_specs(data: str | None, train: str | None, test: str | None
               ) -> tuple[Table | None, dict[str, Any], np.ndarray | None, np.ndarray | None]:
  """(table, {flag: source}, test mask, alignment keys) of the data specs; Nones without."""
  from ecgjax import data as data_lib  # pylint: disable=g-import-not-at-top
  if data and (train or test):
    raise InputError("give either --data (one set, split by --protocol or --split_folds) or "
                     "--train and --test (an explicit split), not both")
  if bool(train) != bool(test):
    raise InputError("--train and --test go together (an explicit split)")
  flags = {"--data": data} if data else ({"--train": train, "--test": test} if train else {})
  sources = {f: data_lib.open_source(s) for f, s in flags.items()}
  if not sources:
    return None, {}, None, None
  tables = []
  for flag, src in sources.items():
    if not src.label_names:
      raise InputError(f"{flag} {flags[flag]} has no labels (an unlabelled data set): a probe "
                       "needs labelled records")
    tables.append(_table_from_meta(src.metadata(), src.label_names))
  if len(tables) == 2 and tables[0].label_names != tables[1].label_names:
    raise InputError(f"label names differ between --train {list(tables[0].label_names)} and "
                     f"--test {list(tables[1].label_names)}: both splits must come from the "
                     "same label set")
  table = _concat(tables)
  mask, prefixed = None, False
  if len(tables) == 2:
    both = np.intersect1d(tables[0].record_id, tables[1].record_id)
    if both.size:
      # Two data sets may number their records alike; the same set twice is a leak.
      logging.warning("%d record id(s) occur in both --train and --test (e.g. %s): if they "
                      "are the same recordings, the evaluation leaks", both.size,
                      both[:3].tolist())
      prefixed = True
    mask = np.r_[np.zeros(len(tables[0]), bool), np.ones(len(tables[1]), bool)]
  keys = np.concatenate([_keys(f, t.record_id, prefixed) for f, t in zip(sources, tables)])
  return table, sources, mask, keys


def _file_table(d: dict[str, np.ndarray], path: str) -> Table:
  names = [str(n) for n in d["label_names"]]
  labels = np.asarray(d["labels"])
  if not names or labels.ndim != 2 or labels.shape[1] == 0:
    raise InputError(f"{path} holds no labels (label_names is empty): embed a labelled data "
                     "set, or give the labels with --data / --train and --test")
  if labels.shape[1] != len(names):
    raise InputError(f"{path}: labels have {labels.shape[1]} columns but there are "
                     f"{len(names)} label names")
  return _table_from_meta(d, names)


def gather(*, exports: Sequence[str] = (), files: Sequence[str] = (), data: str | None = None,
           train: str | None = None, test: str | None = None, batch_size: int = 64,
           n_crops: int = 0, progress: bool = True, labels: Sequence[str] = (),
           check: Any = None) -> Inputs:
  """Loads/embeds every source and aligns it to one record table (see the module docstring).

  labels: keep only these labels (one makes a binary task). check: called with
  (table, test_mask) before any embedding (cheap label checks).
  """
  from ecgjax import eval as eval_lib  # pylint: disable=g-import-not-at-top
  from ecgjax import export as export_lib  # pylint: disable=g-import-not-at-top
  if not exports and not files:
    raise InputError("nothing to probe: give --export and/or --embeddings")
  # Exports first: a wrong directory or an incompatible model fails before anything else.
  loaded_exports = []
  for directory in exports:
    export = export_lib.load_export(directory)
    eval_lib.check_export(export)
    loaded_exports.append(export)
  table, sources, mask, keys = open_specs(data, train, test)
  if exports and table is None:
    raise InputError("--export needs records to embed: give --data, or --train and --test")
  loaded = []
  for path in files:
    if not os.path.isfile(path):
      raise InputError(f"no such embeddings file: {path}")
    loaded.append((path, eval_lib.load_embeddings(path)))
  origin = "the data specs"
  if table is None:
    origin = loaded[0][0]
    table = _file_table(loaded[0][1], origin)
    keys = table.record_id
  all_labels = table.label_names
  if labels:
    table = table.select_labels(labels)
  if check is not None:
    check(table, mask)

  blocks: list[tuple[str, np.ndarray, np.ndarray]] = []  # (name, keys, embeddings)
  for export in loaded_exports:
    parts, part_keys = [], []
    for flag, src in sources.items():
      k = n_crops or eval_lib.default_n_crops(export, src)
      t0 = time.perf_counter()
      e = eval_lib.embed_source(export, src, batch_size=batch_size, n_crops=k,
                                progress=progress)
      parts.append(e["embeddings"])
      part_keys.append(_keys(flag, e["record_id"], not np.array_equal(keys, table.record_id)))
      logging.info("%s: embedded %d records of %s (%d crop(s)) in %.1fs", export.directory,
                   len(src), flag, k, time.perf_counter() - t0)
    block_keys = np.concatenate(part_keys)
    have = np.isin(keys, block_keys)
    if not have.all():
      logging.warning("%s: %d record(s) could not be embedded and are left out",
                      export.directory, int((~have).sum()))
      rows = np.flatnonzero(have)
      table, keys = table.subset(rows), keys[rows]
      mask = None if mask is None else mask[rows]
    blocks.append((export.directory, block_keys, np.concatenate(parts)))
  for path, d in loaded:
    if not np.array_equal(keys, table.record_id):
      raise InputError(f"record ids repeat between --train and --test, so {path} cannot be "
                       "matched to them: use --export, or one --data with --split_folds")
    if origin != path and data is None and train is None:
      # Both from files: the same records and the same labels, or the fusion is wrong.
      other = _file_table(d, path)
      if labels and other.label_names == all_labels:
        other = other.select_labels(labels)
      rows = fusion.align(table.record_id, fusion.Block(path, other.record_id,
                                                        np.zeros((len(other), 0))),
                          origin, exact=True)
      if (other.label_names != table.label_names
          or not np.array_equal(other.labels[rows] > 0.5, table.labels > 0.5)):
        raise InputError(f"labels of {path} differ from those of {origin}: fused files must "
                         "come from the same labelled records")
    blocks.append((path, np.asarray(d["record_id"]).astype(str), d["embeddings"]))
  out_blocks, names = [], []
  for name, block_keys, emb in blocks:
    exact = data is None and train is None and name in files
    rows = fusion.align(keys, fusion.Block(name, block_keys, emb), origin, exact=exact)
    x = np.asarray(emb, np.float32)[rows]
    if not np.all(np.isfinite(x)):
      raise InputError(f"{name}: embeddings contain NaN or infinite values")
    out_blocks.append(x)
    names.append(name)
  specs = [s for s in (data, train, test) if s]
  return Inputs(table, out_blocks, names, mask, specs, list(exports), list(files))
