"""Fine-tuning data: records prepared once and held in memory, label selection, pos_weight.

Labelled fine-tuning sets are small (hundreds to tens of thousands of records) and every
epoch reads every record: running the offline part of the input contract (resampling,
filters, the ECGFounder median baseline) once instead of once per epoch is most of the
input cost. `PreparedInMemory` stores each record as `prepare_record` would return it and
marks it "prepared", so the grain pipeline and `eval_batches` skip those steps and keep
only crop, standardisation and augmentation online.
"""

from __future__ import annotations

from collections.abc import Sequence
import concurrent.futures
import os
from typing import Any

import numpy as np
from absl import logging

from ecgjax import data as data_lib
from ecgjax.data import sources as sources_lib


class PreparedInMemory(sources_lib.Source):
  """`base` with the offline preprocessing applied once, labels optionally selected."""

  def __init__(self, base: sources_lib.Source, preprocessing: data_lib.Preprocessing,
               labels: Sequence[str] = (), threads: int | None = None):
    self.base, self.preprocessing = base, preprocessing
    self.image = data_lib.batch.is_image(preprocessing)  # printouts: the fitted picture
    self.modality = "image" if self.image else "signal"
    self.spec = base.spec
    self.fs = getattr(preprocessing, "fs", None)
    self.leads = getattr(preprocessing, "leads", ())
    names = tuple(base.label_names)
    labels = tuple(labels) or names
    missing = [l for l in labels if l not in names]
    if missing:
      raise ValueError(f"labels {missing} are not in {base!r} (it has {list(names)})")
    self.label_names = labels
    self.label_idx = np.asarray([names.index(l) for l in labels], np.int64)
    meta = base.metadata()
    self._meta = {**meta, "labels": np.asarray(meta["labels"], np.float32)[:, self.label_idx]}
    # One shared marker: prepare_record checks the contract once per source.
    self._marker = preprocessing.to_dict()
    threads = threads or min(8, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      self._records = list(pool.map(self._load, range(len(base))))
    bad = sum(isinstance(r, sources_lib.BadRecordError) for r in self._records)
    if bad:
      logging.warning("%s: %d of %d records are bad and will be skipped", base, bad,
                      len(base))

  def _load(self, index: int) -> dict[str, Any] | sources_lib.BadRecordError:
    try:
      rec = self.base[index]
      if self.image:
        pixels = self.preprocessing.fitted_record(rec)
      else:
        x, mask = data_lib.prepare_record(self.preprocessing, rec)
    except sources_lib.BadRecordError as e:
      return e
    labels = np.asarray(rec.get("labels", ()), np.float32).reshape(-1)
    if labels.size == len(self.base.label_names):
      labels = labels[self.label_idx]
    if np.isnan(labels).any():  # an image with no row in labels.csv: nothing to learn from
      return sources_lib.BadRecordError(rec["record_id"], "unlabelled (no labels row)")
    if self.image:
      return {"pixels": pixels, "labels": labels, "record_id": rec["record_id"],
              "patient_id": rec.get("patient_id", rec["record_id"]),
              "fold": rec.get("fold", 0), "prepared": self._marker}
    return {"signal": x, "fs": self.preprocessing.fs, "leads": self.preprocessing.leads,
            "lead_mask": mask, "labels": labels, "record_id": rec["record_id"],
            "patient_id": rec.get("patient_id", rec["record_id"]),
            "fold": rec.get("fold", 0), "prepared": self._marker}

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int) -> sources_lib.Record:
    rec = self._records[self._check_index(index)]
    if isinstance(rec, sources_lib.BadRecordError):
      raise sources_lib.BadRecordError(rec.record_id, rec.reason)
    return rec

  def metadata(self) -> dict[str, np.ndarray]:
    return self._meta

  def good(self) -> np.ndarray:
    """Indices of the records that prepared without error."""
    return np.asarray([i for i, r in enumerate(self._records)
                       if not isinstance(r, sources_lib.BadRecordError)], np.int64)


def pos_weight(labels: np.ndarray, mode: str) -> np.ndarray | None:
  """BCE positive weights per label: none, balanced (n_neg / n_pos) or a comma list."""
  mode = str(mode).strip()
  n_labels = labels.shape[1]
  if mode in ("", "none"):
    return None
  if mode == "balanced":
    y = labels > 0.5
    pos, neg = y.sum(0), (~y).sum(0)
    # A label without positives in the training split cannot be balanced: weight 1.
    return np.where(pos > 0, neg / np.maximum(pos, 1), 1.0).astype(np.float32)
  try:
    values = np.asarray([float(v) for v in mode.split(",")], np.float32)
  except ValueError:
    raise ValueError(f"pos_weight must be none, balanced or numbers, got {mode!r}") from None
  if values.size == 1:
    values = np.full(n_labels, values[0], np.float32)
  if values.size != n_labels:
    raise ValueError(f"pos_weight has {values.size} values for {n_labels} labels")
  return values
