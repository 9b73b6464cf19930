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

from typing import Any

import numpy as np

from ecgjax.data import images
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data.formats import sharded

DTYPE = "uint8"


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


class PreparedImageSource(sharded.ShardedSource):
  """Fitted pictures of a prepared directory (module docstring); files open lazily."""

  modality = "image"
  leads: tuple[str, ...] = ()
  fs = None

  def __init__(self, path: str, meta: dict[str, Any], spec: specs.DataSpec | None = None):
    self._init_files(path, meta, spec)
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

  def __getitem__(self, index: int) -> sources.Record:
    index = self._check_index(index)
    row = self._rows()[index]
    size = int(np.prod(self.shape))
    flat = self._slice(row, int(row["start"]) * size, size, "bytes")
    return {"pixels": flat.reshape(self.shape), "record_id": str(row["record_id"]),
            "patient_id": str(row["patient_id"]), "fold": int(row["fold"]),
            "labels": np.array(self._label_rows()[index], np.float32),
            "prepared": self.prepared}
