"""grain input pipelines: an endless resumable training stream, in-order eval batches.

Training stream design (per process):

  range(N) -> shuffle(seed, reshuffled every epoch) -> repeat forever
    -> random_map(load record, preprocess, random crop)   [rng: seed + position]
    -> slice(process_index::process_count)                [repeat-then-shard]
    -> to_iter_dataset -> mp_prefetch(worker_count) -> batch(global/P)

Sharding the global stream after the random map means the union of the
processes' batch s is exactly global positions [s*B, (s+1)*B) with the same
crops, whatever the process count, and every process yields batches forever.
Batching after mp_prefetch makes the output independent of worker_count (when
no record is skipped). The pipeline reads indices rather than wrapping the
source with `MapDataset.source`, so that a BadRecordError raised while READING
a record (not only while preprocessing it) is caught and the record skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
import concurrent.futures
from typing import Any

from absl import flags
from absl import logging
import grain
import numpy as np

from ecgjax.data import sources as sources_lib
from ecgjax.data import transforms

Batch = dict[str, np.ndarray]

# Per-process record of skipped records (each grain worker has its own).
_BAD_IDS: set[str] = set()
_BAD_COUNT = [0]


def bad_record_count() -> int:
  """Number of bad records skipped so far in this process (workers count their own)."""
  return _BAD_COUNT[0]


def _report_bad(err: sources_lib.BadRecordError) -> None:
  _BAD_COUNT[0] += 1
  if err.record_id not in _BAD_IDS:  # Once per id, not once per epoch.
    _BAD_IDS.add(err.record_id)
    logging.warning("skipping bad record %s (%d skipped in this process): %s",
                    err.record_id, _BAD_COUNT[0], err.reason)


def _check_labels(rec: sources_lib.Record, n_labels: int) -> np.ndarray:
  labels = np.asarray(rec.get("labels", ()), dtype=np.float32).reshape(-1)
  if labels.shape[0] != n_labels:
    raise sources_lib.BadRecordError(
        rec.get("record_id", "?"),
        f"has {labels.shape[0]} labels, the source declares {n_labels}")
  return labels


# Skipping is for the odd broken file. When most records fail (wrong leads=,
# wrong fs, a corrupt copy) an endless stream would otherwise spin forever on
# skips without ever yielding a batch.
_MAX_BAD_FRACTION, _MIN_SEEN = 0.5, 200


class _TrainExample:
  """grain random map: source index -> example dict, or None for a bad record."""

  def __init__(self, source: sources_lib.Source,
               preprocessing: transforms.Preprocessing):
    self.source = source
    self.preprocessing = preprocessing
    self.n_labels = len(source.label_names)
    self.seen = self.bad = 0  # Per process: each worker has its own copy.

  def __call__(self, index: int, rng: np.random.Generator) -> Batch | None:
    self.seen += 1
    try:
      rec = self.source[int(index)]
      x, mask = self.preprocessing.process(rec, rng)
      labels = _check_labels(rec, self.n_labels)
    except sources_lib.BadRecordError as e:
      _report_bad(e)
      self.bad += 1
      if self.seen >= _MIN_SEEN and self.bad > _MAX_BAD_FRACTION * self.seen:
        raise RuntimeError(
            f"{self.bad} of the last {self.seen} records of {self.source!r} "
            f"were bad (latest: {e}); fix the data or its spec") from e
      return None
    return {"signal": x, "lead_mask": mask, "labels": labels,
            "index": np.int64(index)}


def _derived_seed(seed: int, stream: int) -> int:
  return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


def train_dataset(
    source: sources_lib.Source,
    preprocessing: transforms.Preprocessing,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    read_threads: int = 4,
) -> grain.IterDataset:
  """The training stream as a grain IterDataset (see the module docstring)."""
  if global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size {global_batch_size} is not divisible by "
        f"process_count {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if len(source) == 0:
    raise ValueError(f"{source!r} has no records")
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    raise RuntimeError(
        "grain worker processes read absl flags: run under absl.app.run, or "
        "call absl.flags.FLAGS.mark_as_parsed() before train_iterator(..., "
        "worker_count>0)")
  local_batch = global_batch_size // process_count
  ds = grain.MapDataset.range(len(source))
  ds = ds.shuffle(seed=_derived_seed(seed, 0)).repeat()
  ds = ds.random_map(_TrainExample(source, preprocessing),
                     seed=_derived_seed(seed, 1))
  ds = ds[process_index::process_count]
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads,
      prefetch_buffer_size=(max(read_threads, 2 * local_batch)
                            if read_threads else 0)))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count,
        # Counted in batches by the caller; the workers hand over elements.
        per_worker_buffer_size=max(1, worker_buffer_size * local_batch
                                   // worker_count)))
  return it.batch(local_batch, drop_remainder=True)


def train_iterator(
    source: sources_lib.Source,
    preprocessing: transforms.Preprocessing,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    worker_count: int = 0,
    worker_buffer_size: int = 2,
    read_threads: int = 4,
) -> grain.DatasetIterator:
  """Endless iterator of local training batches with get_state()/set_state().

  Batches: signal float32 (b, leads, samples), lead_mask float32 (b, leads),
  labels float32 (b, n_labels), index int64 (b,) (source indices), where
  b = global_batch_size // process_count. Records raising BadRecordError are
  skipped and logged (a RuntimeError if most records are bad). Save the
  iterator with orbax through `grain.checkpoint.CheckpointSave(it)` /
  `CheckpointRestore(it)`; a state restores only into an iterator built with
  the same source, seed, batch size, process and worker counts.

  worker_count: grain worker processes (0: in this process, `read_threads`
  threads); worker_buffer_size: batches each worker keeps ready.
  """
  return iter(train_dataset(
      source, preprocessing, global_batch_size=global_batch_size, seed=seed,
      process_index=process_index, process_count=process_count,
      worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      read_threads=read_threads))


def _eval_example(source, preprocessing, n_crops, n_labels, index):
  try:
    rec = source[int(index)]
    x, mask = preprocessing.prepare(rec)
    return rec, preprocessing.crops_of(x, n_crops), mask, _check_labels(
        rec, n_labels)
  except sources_lib.BadRecordError as e:
    _report_bad(e)
    return None


def _stack_eval(items: list[tuple[Any, ...]], batch_size: int,
                template: dict[str, np.ndarray]) -> Batch:
  """Stacks examples and pads to batch_size with zeros / valid=False."""
  n = len(items)
  out = {k: np.zeros((batch_size,) + v.shape, v.dtype) for k, v in template.items()}
  out["record_id"] = np.full(batch_size, "", dtype=object)
  out["patient_id"] = np.full(batch_size, "", dtype=object)
  out["fold"] = np.zeros(batch_size, np.int64)
  out["index"] = np.full(batch_size, -1, np.int64)
  out["valid"] = np.zeros(batch_size, bool)
  for j, (index, (rec, crops, mask, labels)) in enumerate(items):
    out["signal"][j], out["lead_mask"][j], out["labels"][j] = crops, mask, labels
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

  Each batch: signal float32 (b, n_crops, leads, samples) -- always 4-D, also
  for n_crops == 1, so eval code has one shape to handle -- lead_mask
  (b, leads), labels (b, n_labels), record_id / patient_id (str arrays),
  fold / index (int64), valid (bool). The last batch is padded to batch_size
  (valid=False) so a jitted function sees one shape. Bad records are skipped
  and logged.
  """
  order = np.arange(len(source)) if indices is None else np.asarray(indices)
  n_leads, n_labels = len(preprocessing.leads), len(source.label_names)
  template = {
      "signal": np.zeros((n_crops, n_leads, preprocessing.samples), np.float32),
      "lead_mask": np.zeros(n_leads, np.float32),
      "labels": np.zeros(n_labels, np.float32),
  }
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
          yield _stack_eval(pending, batch_size, template)
          pending = []
    if pending:
      yield _stack_eval(pending, batch_size, template)
  finally:
    if pool:
      pool.shutdown(wait=False, cancel_futures=True)
