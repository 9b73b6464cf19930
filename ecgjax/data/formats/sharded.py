"""The part every prepared directory shares (signals, `prepared.py`; printouts,
`prepared_image.py`): meta.json, a memory-mapped index and labels, and shards opened lazily."""

from __future__ import annotations

import collections
import os
from typing import Any

import numpy as np

from ecgjax.data import sources
from ecgjax.data import specs

META_FILE = "meta.json"
INDEX_FILE = "index.npy"
LABELS_FILE = "labels.npy"
# Open shard maps per process: each np.memmap holds a file descriptor, and a
# 10 M-record corpus has thousands of shards (the usual limit is 1024 fds).
_MAX_OPEN_SHARDS = 64


class ShardedSource(sources.Source):
  """What every prepared directory shares: meta.json, a memory-mapped index and labels, and
  shards opened lazily (at most `_MAX_OPEN_SHARDS` at a time) and reopened after pickling."""

  def _init_files(self, path: str, meta: dict[str, Any], spec: specs.DataSpec | None) -> None:
    self.path = os.fspath(path)
    self.meta = meta
    self.spec = spec or specs.DataSpec("prepared", self.path)
    self.label_names = tuple(meta["label_names"])
    self._n = int(meta["counts"]["records"])
    self._shard_files = [s["file"] for s in meta["shards"]]
    self._index: np.ndarray | None = None
    self._labels: np.ndarray | None = None
    self._shards: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

  def __getstate__(self) -> dict[str, Any]:
    # grain workers unpickle a source: they reopen the maps themselves.
    state = dict(self.__dict__)
    state.update(_index=None, _labels=None, _shards=collections.OrderedDict())
    return state

  def __len__(self) -> int:
    return self._n

  def _rows(self) -> np.ndarray:
    if self._index is None:
      index_path = os.path.join(self.path, INDEX_FILE)
      try:
        self._index = np.load(index_path, mmap_mode="r")
      except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"prepared: cannot read {index_path} ({e}); the records are unknown "
                         "without it: prepare the data again") from None
      if len(self._index) != self._n:
        raise ValueError(f"{self.path}: {INDEX_FILE} has {len(self._index)} "
                         f"rows, meta.json says {self._n} records")
    return self._index

  def _label_rows(self) -> np.ndarray:
    if self._labels is None:
      if self.label_names:
        self._labels = np.load(os.path.join(self.path, LABELS_FILE), mmap_mode="r")
      else:
        self._labels = np.zeros((self._n, 0), np.float32)
    return self._labels

  def _shard(self, number: int) -> np.ndarray:
    """The memory map of shard `number`; OSError naming the file if unreadable."""
    arr = self._shards.get(number)
    if arr is None:
      path = os.path.join(self.path, self._shard_files[number])
      try:
        arr = np.load(path, mmap_mode="r")
      except FileNotFoundError:
        raise OSError(f"missing shard {path}") from None
      except (OSError, ValueError, EOFError) as e:
        # A truncated file: numpy cannot map more bytes than its header promises.
        raise OSError(f"unreadable shard {path} (truncated or corrupt: {e})") from None
      self._shards[number] = arr
      if len(self._shards) > _MAX_OPEN_SHARDS:
        self._shards.popitem(last=False)
    else:
      self._shards.move_to_end(number)
    return arr

  def _slice(self, row: np.void, start: int, size: int, what: str) -> np.ndarray:
    """Elements [start, start + size) of the row's shard; BadRecordError naming the shard
    when it is missing, truncated or too short (the other shards' records still read)."""
    shard, rid = int(row["shard"]), str(row["record_id"])
    if not 0 <= shard < len(self._shard_files):
      raise sources.BadRecordError(rid, f"{self.path}/{INDEX_FILE} names shard {shard}, but "
                                   f"{META_FILE} lists {len(self._shard_files)}")
    try:
      flat = np.asarray(self._shard(shard)[start:start + size])
    except OSError as e:
      raise sources.BadRecordError(rid, str(e)) from None
    if flat.size != size:
      raise sources.BadRecordError(
          rid, f"shard {os.path.join(self.path, self._shard_files[shard])} holds "
          f"{flat.size} of this record's {size} {what} (truncated)")
    return flat

  def metadata(self) -> dict[str, np.ndarray]:
    rows = self._rows()
    return {
        "record_id": np.asarray(rows["record_id"]).astype(str),
        "patient_id": np.asarray(rows["patient_id"]).astype(str),
        "fold": np.asarray(rows["fold"], np.int64),
        "labels": np.array(self._label_rows(), np.float32),
    }
