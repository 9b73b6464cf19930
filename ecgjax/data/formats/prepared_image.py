"""`prepared:DIR` holding printouts: pictures already put through the image contract.

`python -m ecgjax.data prepare image:DIR OUT` runs EIANet's preprocessing (the seven stages at
the page's own resolution, then the fit into height x width, `ecgjax.data.images`) once per
record and stores the fitted uint8 picture, so training reads a memory-mapped slice instead of
decoding a 2000 x 1500 page and thresholding, labelling components and equalising it every
epoch: at 200 dpi the stages cost ~0.3 s of a core per page, the read of a prepared picture
~0.1 ms. Layout of DIR (written atomically, like the signal format):

  meta.json         the signal format's keys with "preprocessing" the image contract (its
                    "modality" is "image"), "dtype" "uint8" and "shape" [height, width, channels]
  index.npy         one row per record: record_id, patient_id, fold, source_index, shard, start
                    (the record's position in its shard)
  labels.npy        float32 (N, n_labels) (NaN: an image with no labels row)
  shard-00000.npy   flat uint8: record k of the shard is the C-order (height, width, channels)
  ...               block at element k * height * width * channels

A record carries `pixels` (height, width, channels) uint8 and "prepared": the contract, so
`ImagePreprocessing.prepare_record` only scales it to [0, 1], and a contract that differs in any
key is an error naming the keys (a second pass of the stages over a fitted picture would be
silently wrong). Page augmentation (`page_jitter`) stays online.
"""

from __future__ import annotations

import collections
import os
from typing import Any

import numpy as np

from ecgjax.data import images
from ecgjax.data import sources
from ecgjax.data import specs

DTYPE = "uint8"
_MAX_OPEN_SHARDS = 64  # file descriptors, as in the signal format


def index_dtype(id_chars: int, patient_chars: int) -> np.dtype:
  """Structured dtype of an image directory's index.npy rows."""
  return np.dtype([
      ("record_id", f"U{max(id_chars, 1)}"),
      ("patient_id", f"U{max(patient_chars, 1)}"),
      ("fold", "i8"),
      ("source_index", "i8"),
      ("shard", "i4"),
      ("start", "i8"),  # record position within the shard
  ])


def is_image_meta(meta: dict[str, Any]) -> bool:
  """Whether a prepared directory's meta.json describes pictures."""
  return dict(meta.get("preprocessing") or {}).get("modality") == "image"


class PreparedImageSource(sources.Source):
  """Fitted pictures of a prepared directory (module docstring); files open lazily."""

  modality = "image"
  leads: tuple[str, ...] = ()
  fs = None

  def __init__(self, path: str, meta: dict[str, Any], spec: specs.DataSpec | None = None):
    self.path = os.fspath(path)
    self.meta = meta
    self.spec = spec or specs.DataSpec("prepared", self.path)
    try:
      self.preprocessing = images.ImagePreprocessing.from_dict(meta["preprocessing"])
    except (TypeError, ValueError) as e:
      raise ValueError(f"prepared: {self.path}/meta.json has a bad image contract ({e}); "
                       "prepare the data again") from None
    pp = self.preprocessing
    self.shape = (pp.height, pp.width, pp.channels)
    if list(meta.get("shape", ())) != list(self.shape) or meta.get("dtype") != DTYPE:
      raise ValueError(f"prepared: {self.path}/meta.json is corrupt: shape "
                       f"{meta.get('shape')} {meta.get('dtype')} does not match its contract "
                       f"{list(self.shape)} {DTYPE}")
    self.prepared = pp.to_dict()  # one shared marker
    self.label_names = tuple(meta["label_names"])
    self._n = int(meta["counts"]["records"])
    self._shard_files = [s["file"] for s in meta["shards"]]
    self._index: np.ndarray | None = None
    self._labels: np.ndarray | None = None
    self._shards: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)  # grain workers reopen the maps themselves
    state.update(_index=None, _labels=None, _shards=collections.OrderedDict())
    return state

  def __len__(self) -> int:
    return self._n

  def _rows(self) -> np.ndarray:
    if self._index is None:
      path = os.path.join(self.path, "index.npy")
      try:
        self._index = np.load(path, mmap_mode="r")
      except (OSError, ValueError, EOFError) as e:
        raise ValueError(f"prepared: cannot read {path} ({e}); prepare the data again") from None
      if len(self._index) != self._n:
        raise ValueError(f"{self.path}: index.npy has {len(self._index)} rows, meta.json "
                         f"says {self._n} records")
    return self._index

  def _label_rows(self) -> np.ndarray:
    if self._labels is None:
      self._labels = (np.load(os.path.join(self.path, "labels.npy"), mmap_mode="r")
                      if self.label_names else np.zeros((self._n, 0), np.float32))
    return self._labels

  def _shard(self, number: int, rid: str) -> np.ndarray:
    arr = self._shards.get(number)
    if arr is not None:
      self._shards.move_to_end(number)
      return arr
    if not 0 <= number < len(self._shard_files):
      raise sources.BadRecordError(rid, f"{self.path}/index.npy names shard {number}, "
                                   f"meta.json lists {len(self._shard_files)}")
    path = os.path.join(self.path, self._shard_files[number])
    try:
      arr = np.load(path, mmap_mode="r")
    except FileNotFoundError:
      raise sources.BadRecordError(rid, f"missing shard {path}") from None
    except (OSError, ValueError, EOFError) as e:
      raise sources.BadRecordError(rid, f"unreadable shard {path} (truncated or corrupt: "
                                   f"{e})") from None
    self._shards[number] = arr
    if len(self._shards) > _MAX_OPEN_SHARDS:
      self._shards.popitem(last=False)
    return arr

  def __getitem__(self, index: int) -> sources.Record:
    index = self._check_index(index)
    row = self._rows()[index]
    rid = str(row["record_id"])
    size = int(np.prod(self.shape))
    shard = self._shard(int(row["shard"]), rid)
    start = int(row["start"]) * size
    flat = np.asarray(shard[start:start + size])
    if flat.size != size:
      raise sources.BadRecordError(
          rid, f"shard {os.path.join(self.path, self._shard_files[int(row['shard'])])} holds "
          f"{flat.size} of this picture's {size} bytes (truncated)")
    return {"pixels": flat.reshape(self.shape), "record_id": rid,
            "patient_id": str(row["patient_id"]), "fold": int(row["fold"]),
            "labels": np.array(self._label_rows()[index], np.float32),
            "prepared": self.prepared}

  def metadata(self) -> dict[str, np.ndarray]:
    rows = self._rows()
    return {"record_id": np.asarray(rows["record_id"]).astype(str),
            "patient_id": np.asarray(rows["patient_id"]).astype(str),
            "fold": np.asarray(rows["fold"], np.int64),
            "labels": np.array(self._label_rows(), np.float32)}
