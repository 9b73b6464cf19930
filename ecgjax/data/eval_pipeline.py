"""In-order, padded evaluation batches over a whole source (or a subset of its records)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import concurrent.futures
from typing import Any

import numpy as np

from ecgjax.data import batch as batch_lib
from ecgjax.data import sources as sources_lib
from ecgjax.data import transforms
from ecgjax.data.formats.prepared import prepare_record
from ecgjax.data.pipeline import Batch, _check_labels, _report_bad


def _eval_example(source, preprocessing, n_crops, n_labels, index):
  try:
    rec = source[int(index)]
    if batch_lib.is_image(preprocessing):  # the whole printout is the one view
      x = preprocessing.prepare_record(rec)
      return rec, x[None], None, _check_labels(rec, n_labels)
    x, mask = prepare_record(preprocessing, rec)
    views = preprocessing.views_of(x, n_crops)
    if not len(views):
      pp = preprocessing
      raise sources_lib.BadRecordError(
          rec.get("record_id", str(index)),
          f"{x.shape[-1] / pp.fs:g} s long, shorter than one {pp.samples / pp.fs:g} s "
          f"segment: the contract embeds whole segments only (views='segments')")
    return rec, views, mask, _check_labels(rec, n_labels)
  except sources_lib.BadRecordError as e:
    _report_bad(e)
    return None


def _views_bucket(k: int) -> int:
  """Views per record a batch is padded to: the next power of two, so records of every length
  (ECG-FM's 1-12 segments of CPSC 2018) compile a handful of shapes, not one per count."""
  return 1 << max(int(k) - 1, 0).bit_length()


def _stack_eval(items: list[tuple[Any, ...]], batch_size: int,
                sizes: dict[str, int], n_views: int | None) -> Batch:
  """Stacks examples into the eval batch of data/batch.py, padded to batch_size with padding
  rows (valid False) and every record's views to n_views, or to the bucket of the batch's
  most, with view_mask 0."""
  n = len(items)
  if n_views is None:
    n_views = _views_bucket(max(len(views) for _, (_, views, _, _) in items))
  image = "H" in sizes
  out = batch_lib.example_batch({**sizes, "B": batch_size, "V": n_views},
                                "image_eval" if image else "eval", padding=True)
  key = "pixels" if image else "signal"
  for j, (index, (rec, views, mask, labels)) in enumerate(items):
    out[key][j, :len(views)], out["labels"][j] = views, labels
    if not image:
      out["lead_mask"][j] = mask
    out["view_mask"][j, :len(views)] = 1.0
    out["record_id"][j] = rec["record_id"]
    out["patient_id"][j] = rec.get("patient_id", rec["record_id"])
    out["fold"][j] = rec.get("fold", 0)
    out["index"][j] = index
  out["valid"][:n] = True
  out["record_id"] = out["record_id"].astype(str)
  out["patient_id"] = out["patient_id"].astype(str)
  return out


def eval_batches(
    source: sources_lib.Source,
    preprocessing: transforms.Preprocessing,
    *,
    batch_size: int,
    n_crops: int = 1,
    indices: Sequence[int] | None = None,
    num_threads: int = 0,
) -> Iterator[Batch]:
  """Deterministic batches over all records (or `indices`) in order.

  Each batch: signal float32 (b, views, leads, samples) -- always 4-D, also
  for one view, so eval code has one shape to handle -- view_mask (b, views)
  (1 for a real view), lead_mask (b, leads), labels (b, n_labels), record_id /
  patient_id (str arrays), fold / index (int64), valid (bool). Views are the
  contract's (`Preprocessing.views`): n_crops crops, or every whole segment of
  the record (a record's count varies; a batch is padded to a power of two).
  The last batch is padded to batch_size (valid=False) so a jitted function
  sees one shape. Bad records are skipped and logged.
  """
  image = batch_lib.is_image(preprocessing)
  fixed_views = 1 if image else None if preprocessing.views == "segments" else n_crops
  order = np.arange(len(source)) if indices is None else np.asarray(indices)
  n_labels = len(source.label_names)
  sizes = batch_lib.sizes_of(preprocessing, n_labels)

  def load(i):
    return _eval_example(source, preprocessing, n_crops, n_labels, i)

  pool = (concurrent.futures.ThreadPoolExecutor(num_threads)
          if num_threads > 0 else None)
  try:
    pending: list[tuple[int, Any]] = []
    chunk = max(batch_size, 4 * max(num_threads, 1))
    for start in range(0, len(order), chunk):
      part = order[start:start + chunk]
      results = pool.map(load, part) if pool else map(load, part)
      for index, ex in zip(part, results):
        if ex is None:
          continue
        pending.append((int(index), ex))
        if len(pending) == batch_size:
          yield _stack_eval(pending, batch_size, sizes, fixed_views)
          pending = []
    if pending:
      yield _stack_eval(pending, batch_size, sizes, fixed_views)
  finally:
    if pool:
      pool.shutdown(wait=False, cancel_futures=True)
