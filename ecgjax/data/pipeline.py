"""grain input pipeline: an endless, resumable training stream (eval batches: eval_pipeline.py).

Training stream design (per process):

  range(N) -> shuffle(seed, reshuffled every epoch) -> repeat forever
    -> random_map(load record, prepare, random crop, finish, augment)
                                                          [rng: seed + position]
    -> slice(process_index::process_count)                [repeat-then-shard]
    -> chunks of CHUNK consecutive elements -> to_iter_dataset
    -> mp_prefetch(worker_count) -> skip-count-and-batch(global/P) [main process]

Sharding the global stream after the random map means the union of the
processes' batch s is exactly global positions [s*B, (s+1)*B) with the same
crops, whatever the process count, and every process yields batches forever.
Chunks have a fixed size and batches are cut after mp_prefetch, in stream
order, so the output is independent of worker_count; moving chunks rather than
single records between processes is what lets workers exceed ~1000 records/s.

Bad records. A record raising BadRecordError (while reading it, preprocessing
it, or checking its labels) becomes a marker (id, reason) in its chunk instead
of an example, so it travels through the worker processes like any record and
is counted by the last stage, in the main process, in stream order: the counts
and the max_bad_fraction check are exact whatever the worker count, and the
same record trips the check with 0 or 2 workers. That stage exposes
`records_seen`, `bad_records` and `bad_examples` on the iterator; the counts
are part of its state, so they survive a resume.

Fine-tuning (AnyECG-CCTA, SPEC.md section 4) adds two options. `augment_epochs=E`
calls the augmentation at strength alpha(e, E) of the stream epoch e = position //
len(source) (the global position, before sharding, so every process agrees);
`paired=True` yields each record twice, its original then its augmented copy in
adjacent rows, so a batch of b records holds 2b rows.

Prepared data (`prepared:DIR`) carries a "prepared" key with the Preprocessing
it was made with: `prepare_record` then skips the offline steps (they ran once
at prepare time) and only reorders leads; crop and finish stay online.
"""

from __future__ import annotations

from collections.abc import Callable
import hashlib
import json
import math
from typing import Any

from absl import flags
from absl import logging
import grain
import numpy as np

from ecgjax.data import batch as batch_lib
from ecgjax.data import sources as sources_lib
from ecgjax.data import transforms
from ecgjax.data.formats.prepared import PreparedMismatchError  # pylint: disable=unused-import
from ecgjax.data.formats.prepared import prepare_record
from ecgjax.errors import UserError

Batch = dict[str, np.ndarray]
# (x float32 (leads, samples), rng) -> x: applied after the crop, before finish.
Augment = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# Per-process record of skipped records (logged once per id).
_BAD_IDS: set[str] = set()
_BAD_COUNT = [0]

# Keys of the marker element a bad record becomes.
_BAD_ID, _BAD_REASON = "bad_record_id", "bad_record_reason"
# At least this many records are read before the bad-fraction check can fire.
MIN_RECORDS_CHECKED = 100
# Records per transfer from the preprocessing threads/processes to the batcher.
CHUNK = 16


class TooManyBadRecordsError(UserError, RuntimeError):
  """More bad records than `max_bad_fraction` allows; names the count and examples."""


def bad_record_count() -> int:
  """Number of bad records skipped so far in this process (training and eval)."""
  return _BAD_COUNT[0]


def _report_bad(err: sources_lib.BadRecordError, context: str = "") -> None:
  _BAD_COUNT[0] += 1
  if err.record_id not in _BAD_IDS:  # Once per id, not once per epoch.
    _BAD_IDS.add(err.record_id)
    logging.warning("skipping bad record %s (%d skipped in this process%s): %s",
                    err.record_id, _BAD_COUNT[0], context, err.reason)


def _check_labels(rec: sources_lib.Record, n_labels: int) -> np.ndarray:
  labels = np.asarray(rec.get("labels", ()), dtype=np.float32).reshape(-1)
  if labels.shape[0] != n_labels:
    raise sources_lib.BadRecordError(
        rec.get("record_id", "?"),
        f"has {labels.shape[0]} labels, the source declares {n_labels}")
  return labels


class _TrainExample:
  """grain random map: source index -> example dict, or a bad-record marker.

  With a schedule the element is (stream position, source index), so the
  epoch that sets the augmentation strength is known per record.
  """

  def __init__(self, source: sources_lib.Source,
               preprocessing: transforms.Preprocessing,
               augment: Augment | None, *, augment_epochs: float = 0.0,
               paired: bool = False):
    self.source = source
    self.preprocessing = preprocessing
    self.augment = augment
    self.augment_epochs = float(augment_epochs)
    self.paired = paired
    self.n_labels = len(source.label_names)

  def __call__(self, element: Any, rng: np.random.Generator) -> dict[str, Any]:
    pp = self.preprocessing
    position, index = element if isinstance(element, tuple) else (None, element)
    try:
      rec = self.source[int(index)]
      x, mask = prepare_record(pp, rec)
      x = pp.finish(transforms.random_crop(x, pp.samples, rng))
      if self.augment is not None:
        y = self._augment(x, mask, rng, position)
        x = np.stack([x, y]) if self.paired else y
      labels = _check_labels(rec, self.n_labels)
    except sources_lib.BadRecordError as e:
      return {_BAD_ID: e.record_id, _BAD_REASON: e.reason}
    return {"signal": x, "lead_mask": mask, "labels": labels,
            "index": np.int64(index),
            "patient": patient_key(rec.get("patient_id", rec["record_id"]))}

  def _augment(self, x: np.ndarray, mask: np.ndarray,
               rng: np.random.Generator, position: int | None) -> np.ndarray:
    augment = self.augment
    if self.augment_epochs > 0:
      epoch = int(position) // len(self.source)
      augment = augment.at_epoch(epoch, self.augment_epochs)
    y = np.asarray(augment(x, rng), dtype=np.float32)
    if y.shape != x.shape:
      raise ValueError(f"augment {self.augment!r} changed the window's shape "
                       f"from {x.shape} to {y.shape}")
    # Absent leads must stay zeros: added noise would make them look recorded.
    return y * mask[:, None]


class _TrainImage:
  """grain random map for image contracts: source index -> {pixels, labels, index, patient}
  (the whole printout, fitted, no crop; `augment` (x, rng) -> x, e.g. images.PageJitter), or
  a bad-record marker."""

  def __init__(self, source: sources_lib.Source, preprocessing: Any, augment: Any = None):
    self.source, self.preprocessing, self.augment = source, preprocessing, augment
    self.n_labels = len(source.label_names)

  def __call__(self, element: Any, rng: np.random.Generator) -> dict[str, Any]:
    index = element[1] if isinstance(element, tuple) else element
    try:
      rec = self.source[int(index)]
      x = self.preprocessing.prepare_record(rec)
      if self.augment is not None:
        x = np.asarray(self.augment(x, rng), np.float32)
      labels = _check_labels(rec, self.n_labels)
    except sources_lib.BadRecordError as e:
      return {_BAD_ID: e.record_id, _BAD_REASON: e.reason}
    return {"pixels": x, "labels": labels, "index": np.int64(index),
            "patient": patient_key(rec.get("patient_id", rec["record_id"]))}


def _with_position(position: int, index: int) -> tuple[int, int]:
  return position, index


class _PackChunk:
  """grain batch_fn: CHUNK consecutive elements -> one dict (good rows stacked, bad listed).

  One transfer per chunk instead of per record: grain's worker processes hand
  each array over through its own shared-memory segment, which caps a stream of
  single records near 1000/s in the main process whatever the worker count.
  """

  def __init__(self, sizes: dict[str, int], kind: str = "train", copies: int = 1):
    # One row of the training batch (data/batch.py), with the paired copies' axis in front.
    self.rows = batch_lib.row_shapes(sizes, kind)
    if copies != 1:
      dtype, shape = self.rows["signal"]
      self.rows["signal"] = (dtype, (copies,) + shape)

  def __call__(self, elements: list[dict[str, Any]]) -> dict[str, Any]:
    good = [e for e in elements if _BAD_ID not in e]
    out = {k: (np.stack([e[k] for e in good]).astype(dtype, copy=False) if good else
               np.zeros((0,) + shape, dtype))
           for k, (dtype, shape) in self.rows.items()}
    bad = [(p, e[_BAD_ID], e[_BAD_REASON])
           for p, e in enumerate(elements) if _BAD_ID in e]
    out["bad_pos"] = np.array([p for p, _, _ in bad], np.int64)
    # Strings travel pickled (grain moves only numeric arrays through shared memory).
    out["bad_text"] = json.dumps([[r, why] for _, r, why in bad])
    out["size"] = len(elements)
    return out


def _min_checked(max_bad_fraction: float) -> int:
  """Records read before the check may fire: >= 10 bad at the limit, at least 100."""
  if max_bad_fraction <= 0:
    return 1  # Zero tolerance: the first bad record stops the run.
  return max(MIN_RECORDS_CHECKED, math.ceil(10 / max_bad_fraction))


def check_bad_fraction(seen: int, bad: int, max_bad_fraction: float,
                       examples: list[tuple[str, str]], name: str) -> None:
  """Raises TooManyBadRecordsError when `bad` of `seen` records exceed the limit (checked from
  max(100, 10 / max_bad_fraction) records on). The loops call it with the counts summed over
  every process, so all processes stop together."""
  min_checked = _min_checked(max_bad_fraction)
  if seen < min_checked or bad <= max_bad_fraction * seen:
    return
  shown = "; ".join(f"{r}: {why}" for r, why in examples)
  raise TooManyBadRecordsError(
      f"{bad} of the {seen} records read from {name} were bad "
      f"({bad / seen:.1%}), above max_bad_fraction={max_bad_fraction:g} "
      f"(checked from {min_checked} records on). Examples: {shown}. "
      "List them all with `python -m ecgjax.data inspect SPEC`, fix the data "
      "or its spec (fs=, leads=), or `python -m ecgjax.data prepare` it once "
      "(bad records are left out), or raise max_bad_fraction.")


class _SkipCountBatchIterator(grain.DatasetIterator):
  """Reads chunks, counts and drops bad records in stream order, cuts batches.

  A batch may end inside a chunk, so the state names the parent's state before
  that chunk and how many of its records were already used.
  """

  def __init__(self, parent: grain.DatasetIterator, batch_size: int,
               max_bad_fraction: float, name: str, check_bad: bool = True):
    super().__init__(parent)
    self._batch_size = batch_size
    self._max_bad = max_bad_fraction
    self._check_bad = check_bad
    self._name = name
    self.records_seen = 0  # Examples and bad records read by this process.
    self.bad_records = 0
    self.bad_examples: list[tuple[str, str]] = []  # First few (id, reason).
    self._chunk: dict[str, Any] | None = None
    self._chunk_state: dict[str, Any] | None = None  # Parent state before it.
    self._pos = self._row = self._resume_pos = 0

  def _next_chunk(self) -> None:
    self._chunk_state = self._parent.get_state()
    chunk = next(self._parent)
    chunk["bad"] = dict(zip(chunk["bad_pos"].tolist(),
                            json.loads(chunk["bad_text"])))
    self._chunk, self._pos, self._row = chunk, 0, 0
    # After set_state: the records of this chunk used before the save.
    for p in range(self._resume_pos):
      self._row += p not in chunk["bad"]
    self._pos, self._resume_pos = self._resume_pos, 0

  def __next__(self) -> Batch:
    pieces, need = [], self._batch_size
    while need:
      if self._chunk is None or self._pos == self._chunk["size"]:
        self._next_chunk()
      chunk, row0 = self._chunk, self._row
      while need and self._pos < chunk["size"]:
        self.records_seen += 1
        if self._pos in chunk["bad"]:
          self._skip(*chunk["bad"][self._pos])
        else:
          self._row += 1
          need -= 1
        self._pos += 1
        self._check()
      if self._row > row0:
        pieces.append((chunk, row0, self._row))
    keys = [k for k in pieces[0][0] if k not in ("bad_pos", "bad_text", "size", "bad")]
    out = {k: np.concatenate([c[k][a:b] for c, a, b in pieces]) for k in keys}
    if "signal" in out and out["signal"].ndim == 4:  # paired: (b, 2, leads, T) -> rows 2i, 2i+1
      copies = out["signal"].shape[1]
      out = {k: (v.reshape((-1,) + v.shape[2:]) if k == "signal"
                 else np.repeat(v, copies, axis=0)) for k, v in out.items()}
    return out

  def _skip(self, record_id: str, reason: str) -> None:
    self.bad_records += 1
    if len(self.bad_examples) < 5 and all(
        record_id != r for r, _ in self.bad_examples):
      self.bad_examples.append((record_id, reason))
    _report_bad(sources_lib.BadRecordError(record_id, reason),
                f"; {self.bad_records} of {self.records_seen} records read "
                "by this stream")

  def _check(self) -> None:
    if self._check_bad:
      check_bad_fraction(self.records_seen, self.bad_records, self._max_bad,
                         self.bad_examples, self._name)

  def get_state(self) -> dict[str, Any]:
    partial = self._chunk is not None and self._pos < self._chunk["size"]
    return {"parent": self._chunk_state if partial else self._parent.get_state(),
            "chunk_pos": self._pos if partial else 0,
            "records_seen": self.records_seen, "bad_records": self.bad_records}

  def set_state(self, state: dict[str, Any]) -> None:
    if "chunk_pos" not in state:
      raise ValueError("this data iterator state was saved by an older ecgjax "
                       "pipeline; the data position cannot be restored")
    self._parent.set_state(state["parent"])
    self._chunk, self._resume_pos = None, int(state["chunk_pos"])
    self.records_seen = int(state["records_seen"])
    self.bad_records = int(state["bad_records"])

  def __str__(self) -> str:
    return f"SkipCountBatchIterator(batch_size={self._batch_size})"


class _SkipCountBatch(grain.IterDataset):
  """IterDataset of `_SkipCountBatchIterator` (see the module docstring)."""

  def __init__(self, parent: grain.IterDataset, batch_size: int,
               max_bad_fraction: float, name: str, check_bad: bool = True):
    super().__init__(parent)
    self._args = (batch_size, max_bad_fraction, name, check_bad)

  def __iter__(self) -> _SkipCountBatchIterator:
    return _SkipCountBatchIterator(self._parent.__iter__(), *self._args)

  def __str__(self) -> str:
    return f"SkipCountBatch(batch_size={self._args[0]})"


def patient_key(patient_id: str) -> np.int64:
  """A stable non-negative 31-bit integer for a patient id (train batches carry it as "patient").

  Strings cannot go to the devices; a hash (not a per-source enumeration) needs no pass over the
  metadata and is the same in every process. Two patients collide with probability 2^-31, and
  only a collision inside one batch matters (it adds one spurious contrastive positive).
  """
  digest = hashlib.blake2b(str(patient_id).encode(), digest_size=4).digest()
  return np.int64(int.from_bytes(digest, "little") & 0x7FFFFFFF)


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
    max_bad_fraction: float = 0.01,
    augment: Augment | None = None,
    augment_epochs: float = 0.0,
    paired: bool = False,
    check_bad: bool = True,
) -> grain.IterDataset:
  """The training stream as a grain IterDataset (see the module docstring).

  check_bad=False: count bad records but never raise; the caller checks the counts (the
  training loops do, summed over every process, so that all processes stop together)."""
  if global_batch_size % process_count:
    raise ValueError(
        f"global_batch_size {global_batch_size} is not divisible by "
        f"process_count {process_count}")
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index {process_index} not in [0, {process_count})")
  if len(source) == 0:
    raise ValueError(f"{source!r} has no records")
  if not 0 <= max_bad_fraction < 1:
    # 1 would let a stream of nothing but bad records spin forever.
    raise ValueError(f"max_bad_fraction must be in [0, 1), got {max_bad_fraction}")
  if augment is not None and not callable(augment):
    raise TypeError(f"augment must be callable (x, rng) -> x, got {augment!r}")
  if augment_epochs > 0 and not hasattr(augment, "at_epoch"):
    raise TypeError("augment_epochs needs a scheduled augmentation with "
                    f"at_epoch(epoch, total_epochs) (ScheduledAugment), got {augment!r}")
  if paired and augment is None:
    raise ValueError("paired=True pairs each record with its augmented copy: "
                     "give an augment")
  if worker_count > 0 and not flags.FLAGS.is_parsed():
    raise RuntimeError(
        "grain worker processes read absl flags: run under absl.app.run, or "
        "call absl.flags.FLAGS.mark_as_parsed() before train_iterator(..., "
        "worker_count>0)")
  local_batch = global_batch_size // process_count
  ds = grain.MapDataset.range(len(source))
  ds = ds.shuffle(seed=_derived_seed(seed, 0)).repeat()
  if augment_epochs > 0:
    # Positions key the per-record rng as before, so this changes no random draw.
    ds = ds.map_with_index(_with_position)
  image = batch_lib.is_image(preprocessing)
  if augment is not None and image != bool(getattr(augment, "is_image", False)):
    raise ValueError(f"augment {augment!r} is for {'signals' if image else 'images'}, the "
                     f"inputs are {'images' if image else 'signals'} (config.augment: "
                     f"{'page_jitter or none' if image else 'not page_jitter'})")
  example = (_TrainImage(source, preprocessing, augment) if image else
             _TrainExample(source, preprocessing, augment, augment_epochs=augment_epochs,
                           paired=paired))
  ds = ds.random_map(example, seed=_derived_seed(seed, 1))
  ds = ds[process_index::process_count]
  # Fixed size (not tied to the worker count), so the element order is too.
  ds = ds.batch(CHUNK, batch_fn=_PackChunk(
      batch_lib.sizes_of(preprocessing, len(source.label_names)),
      "image" if image else "train", copies=2 if paired else 1))
  batch_chunks = math.ceil(local_batch / CHUNK)
  it = ds.to_iter_dataset(grain.ReadOptions(
      num_threads=read_threads,
      prefetch_buffer_size=(max(read_threads, 2 * batch_chunks)
                            if read_threads else 0)))
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=worker_count,
        # Counted in batches by the caller; the workers hand over chunks.
        per_worker_buffer_size=max(
            1, math.ceil(worker_buffer_size * batch_chunks / worker_count))))
  return _SkipCountBatch(it, local_batch, max_bad_fraction, repr(source), check_bad)


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
    max_bad_fraction: float = 0.01,
    augment: Augment | None = None,
    augment_epochs: float = 0.0,
    paired: bool = False,
    check_bad: bool = True,
) -> grain.DatasetIterator:
  """Endless iterator of local training batches with get_state()/set_state().

  Batches: signal float32 (b, leads, samples), lead_mask float32 (b, leads),
  labels float32 (b, n_labels), index int64 (b,) (source indices), patient
  int64 (b,) (`patient_key` of the record's patient id), where
  b = global_batch_size // process_count; nothing else, so a batch goes to the
  devices as it is. Save the iterator with orbax through
  `grain.checkpoint.CheckpointSave(it)` / `CheckpointRestore(it)`; a state
  restores only into an iterator built with the same source, seed, batch size,
  process and worker counts.

  Bad records (BadRecordError) are skipped, logged once per id and counted on
  the iterator: `it.records_seen`, `it.bad_records` (this process's share of
  the stream) and `it.bad_examples` (first (id, reason) pairs). Past
  `max_bad_fraction` of the records read (checked once
  max(100, 10 / max_bad_fraction) records have been read: 1000 at the default
  1%, so the limit means >= 10 bad records and a few unlucky early ones do not
  stop a run; 0: the first bad record stops it) it raises
  TooManyBadRecordsError. Each process checks its own share, unless check_bad=False:
  then it only counts, and the caller checks the counts summed over the processes
  (`check_bad_fraction`), as the training loops do.

  augment: `(x, rng) -> x` on the cropped window AFTER `finish` standardised it,
  as the references do (AnyECG-CCTA z-scores, then scales by U(0.9, 1.1); ST-MEM's
  RandAugment acts on the normalised signal): augmenting before a z-score would
  cancel any amplitude scaling. Amplitudes are therefore in standardised units.
  Absent leads (mask 0) are zeroed again afterwards. It runs in the grain
  workers: make it picklable. augment_epochs > 0: `augment.at_epoch(e,
  augment_epochs)` (a ScheduledAugment) augments the records of stream epoch e.
  paired: every record gives two adjacent rows, original then augmented, so a
  batch holds 2 * global_batch_size // process_count rows (global_batch_size
  counts records).

  worker_count: grain worker processes (0: in this process, `read_threads`
  threads); worker_buffer_size: batches each worker keeps ready.
  """
  return iter(train_dataset(
      source, preprocessing, global_batch_size=global_batch_size, seed=seed,
      process_index=process_index, process_count=process_count,
      worker_count=worker_count, worker_buffer_size=worker_buffer_size,
      read_threads=read_threads, max_bad_fraction=max_bad_fraction,
      augment=augment, augment_epochs=augment_epochs, paired=paired, check_bad=check_bad))
