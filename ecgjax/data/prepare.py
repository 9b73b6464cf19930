"""Converts any source to the prepared format (`formats/prepared.py`), in parallel.

    prepare("ptbxl:/data/ptbxl", "/data/ptbxl-stmem", transforms.preset("st_mem"))

Records are cut into chunks; a pool of processes (spawned, so nothing of the
parent's state is inherited) opens the source itself from the spec string and
writes one shard per chunk, streaming records to the file so memory stays at
one record per worker. The directory is built as OUT.tmp and renamed to OUT
only when complete, so a killed run never leaves something that looks
prepared. Bad records are skipped and listed in meta.json.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import io
import json
import math
import multiprocessing
import os
import shutil
import time
from typing import Any

import numpy as np
import tqdm

from ecgjax import errors
from ecgjax import leads as leads_lib
from ecgjax.data import images
from ecgjax.data import sources as sources_lib
from ecgjax.data import specs
from ecgjax.data import transforms
from ecgjax.data.formats import prepared as fmt
from ecgjax.data.formats import prepared_image as image_fmt

SourceArg = str | specs.DataSpec | sources_lib.Source
AnyPreprocessing = transforms.Preprocessing | images.ImagePreprocessing
# Bytes reserved for the .npy header of a shard, written once its size is
# known: numpy pads 1-D headers to this length whatever the shape's digits.
_NPY_HEADER = 128
# Per-process state of pool workers (set by `_init_worker`).
_WORKER: dict[str, Any] = {}


def open_any(source: SourceArg) -> sources_lib.Source:
  """A Source from a spec string, a DataSpec or a Source (returned as is)."""
  if isinstance(source, sources_lib.Source):
    return source
  return sources_lib.open_source(source)


def _init_worker(source: SourceArg, state: dict[str, Any]) -> None:
  # Workers open the source from its spec string (a Source object is pickled).
  _WORKER.clear()
  _WORKER.update(state, source=open_any(source))


def worker_source() -> sources_lib.Source:
  """The source opened by this worker process (inside a `map_chunks` function)."""
  return _WORKER["source"]


def map_chunks(source: SourceArg, state: dict[str, Any],
               fn: Callable[[tuple[int, int, int]], Any],
               chunks: Sequence[tuple[int, int, int]], workers: int,
               desc: str, progress: bool = True) -> Iterator[Any]:
  """Runs fn((number, start, stop)) over record chunks, in worker processes when workers > 1.

  Results arrive in completion order; a tqdm bar counts records.
  """
  total = sum(stop - start for _, start, stop in chunks)
  bar = tqdm.tqdm(total=total, unit="rec", desc=desc, disable=not progress,
                  smoothing=0.1, dynamic_ncols=True)
  with bar:
    if workers <= 1:
      _init_worker(source, state)
      for chunk in chunks:
        result = fn(chunk)
        bar.update(chunk[2] - chunk[1])
        yield result
      return
    ctx = multiprocessing.get_context("spawn")
    arg = source if isinstance(source, sources_lib.Source) else str(
        specs.parse_spec(source))
    with ctx.Pool(workers, _init_worker, (arg, state)) as pool:
      for chunk, result in pool.imap_unordered(_tagged(fn), chunks):
        bar.update(chunk[2] - chunk[1])
        yield result


class _tagged:  # pylint: disable=invalid-name
  """Picklable wrapper returning (chunk, fn(chunk)), for progress by chunk."""

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, chunk):
    return chunk, self.fn(chunk)


def chunk_ranges(n: int, size: int) -> list[tuple[int, int, int]]:
  """(number, start, stop) chunks of at most `size` records covering range(n)."""
  return [(k, s, min(s + size, n)) for k, s in enumerate(range(0, n, size))]


def default_workers(n_chunks: int) -> int:
  """One process per CPU core, no more than there are chunks."""
  return max(1, min(os.cpu_count() or 1, n_chunks))


def _npy_header(dtype: np.dtype, size: int) -> bytes:
  buf = io.BytesIO()
  np.lib.format.write_array_header_1_0(buf, {
      "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
      "shape": (size,)})
  header = buf.getvalue()
  if len(header) != _NPY_HEADER:  # A numpy that pads differently: fail loudly.
    raise RuntimeError(f".npy header is {len(header)} bytes, expected {_NPY_HEADER}")
  return header


def _bad_entry(index: int, e: Exception) -> dict[str, Any]:
  """meta.json's entry for a record that failed: one unreadable file must not end a
  conversion of millions of records (its id is filled in later when the error lacks it)."""
  if isinstance(e, sources_lib.BadRecordError):
    return {"index": index, "record_id": e.record_id, "reason": e.reason}
  return {"index": index, "record_id": None, "reason": f"{type(e).__name__}: {e}"}


def _labels_of(rec: sources_lib.Record, n_labels: int) -> np.ndarray:
  """The record's labels as float32 (n_labels,); a bad record when the count differs."""
  labels = np.asarray(rec.get("labels", ()), np.float32).reshape(-1)
  if labels.shape[0] != n_labels:
    raise sources_lib.BadRecordError(
        rec["record_id"], f"has {labels.shape[0]} labels, the source declares {n_labels}")
  return labels


def _prepare_chunk(chunk: tuple[int, int, int]) -> dict[str, Any]:
  """Writes the shard of one chunk; returns its records' index fields and bad records."""
  number, start, stop = chunk
  source, pp = _WORKER["source"], _WORKER["preprocessing"]
  dtype, n_labels = np.dtype(_WORKER["dtype"]), len(source.label_names)
  good, bad, offset = [], [], 0
  path = os.path.join(_WORKER["tmp"], fmt.shard_name(number))
  with open(path, "wb") as f:
    f.write(b"\0" * _NPY_HEADER)
    for i in range(start, stop):
      try:
        rec = source[i]
        x, mask = fmt.prepare_record(pp, rec)
        labels = _labels_of(rec, n_labels)
        peak = float(np.abs(x).max())
        if peak > float(np.finfo(dtype).max):
          raise sources_lib.BadRecordError(
              rec["record_id"], f"values up to {peak:.4g} exceed the range of "
              f"{dtype.name} (is the source in mV?); prepare with dtype "
              "float32 to keep them")
        y = np.ascontiguousarray(x, dtype=dtype)
      except errors.ContractMismatchError:
        raise  # The whole run is wrong, not this record.
      except Exception as e:  # pylint: disable=broad-except
        bad.append(_bad_entry(i, e))
        continue
      f.write(y.tobytes())
      derived = (leads_lib.reorder_flags(rec["derived_mask"], rec["leads"], pp.leads)
                 if "derived_mask" in rec else np.zeros(len(pp.leads), np.float32))
      good.append((rec["record_id"], rec.get("patient_id", rec["record_id"]),
                   int(rec.get("fold", 0)), i, offset, y.shape[1],
                   (mask != 0).astype(np.uint8), labels, (derived != 0).astype(np.uint8)))
      offset += y.shape[1]
    f.seek(0)
    f.write(_npy_header(dtype, offset * len(pp.leads)))
  return {"number": number, "file": fmt.shard_name(number), "samples": offset,
          "records": good, "bad": bad}


def _prepare_image_chunk(chunk: tuple[int, int, int]) -> dict[str, Any]:
  """Writes one shard of fitted pictures (formats/prepared_image.py); same result keys."""
  number, start, stop = chunk
  source, pp = _WORKER["source"], _WORKER["preprocessing"]
  n_labels, shape = len(source.label_names), (pp.height, pp.width, pp.channels)
  good, bad = [], []
  path = os.path.join(_WORKER["tmp"], fmt.shard_name(number))
  with open(path, "wb") as f:
    f.write(b"\0" * _NPY_HEADER)
    for i in range(start, stop):
      try:
        rec = source[i]
        img = pp.fitted_record(rec)
        labels = _labels_of(rec, n_labels)
        if img.shape != shape:
          raise sources_lib.BadRecordError(
              rec["record_id"], f"fitted picture is {img.shape}, the contract says {shape}")
      except errors.ContractMismatchError:
        raise  # The whole run is wrong, not this record.
      except Exception as e:  # pylint: disable=broad-except
        bad.append(_bad_entry(i, e))
        continue
      f.write(np.ascontiguousarray(img, np.uint8).tobytes())
      good.append((rec["record_id"], rec.get("patient_id", rec["record_id"]),
                   int(rec.get("fold", 0)), i, len(good), 0, None, labels))
    f.seek(0)
    f.write(_npy_header(np.dtype(np.uint8), len(good) * int(np.prod(shape))))
  return {"number": number, "file": fmt.shard_name(number), "samples": 0,
          "records": good, "bad": bad}


def fill_bad_ids(source: sources_lib.Source, bad: list[dict[str, Any]]) -> None:
  """Names bad records that failed with a non-BadRecordError, from the metadata."""
  if not any(b["record_id"] is None for b in bad):
    return
  try:
    ids = source.metadata()["record_id"]
  except Exception:  # pylint: disable=broad-except
    ids = None
  for b in bad:
    if b["record_id"] is None:
      b["record_id"] = str(ids[b["index"]]) if ids is not None else f"#{b['index']}"


def _write_index(tmp: str, shards: list[dict[str, Any]], n_leads: int | None,
                 n_labels: int) -> int:
  """index.npy (and labels.npy) of the shards' records; n_leads None: pictures."""
  rows = [(r, s) for s, shard in enumerate(shards) for r in shard["records"]]
  width = lambda k: max((len(str(r[k])) for r, _ in rows), default=1)
  if n_leads is None:
    index = np.zeros(len(rows), image_fmt.index_dtype(width(0), width(1)))
    for j, (r, s) in enumerate(rows):
      index[j] = (r[0], r[1], r[2], r[3], s, r[4])
  else:
    index = np.zeros(len(rows), fmt.index_dtype(n_leads, width(0), width(1)))
    for j, (r, s) in enumerate(rows):
      index[j] = (r[0], r[1], r[2], r[3], s, r[4], r[5], r[6], r[8])
  np.save(os.path.join(tmp, fmt.INDEX_FILE), index)
  if n_labels:
    labels = np.stack([r[7] for r, _ in rows]).astype(np.float32)
    np.save(os.path.join(tmp, fmt.LABELS_FILE), labels)
  return len(rows)


def prepare(spec: SourceArg, out: str,
            preprocessing: AnyPreprocessing, *,
            workers: int | None = None, shard_size: int = 4096,
            dtype: str = "float16", overwrite: bool = False,
            progress: bool = True) -> dict[str, Any]:
  """Writes `spec`'s records after `preprocessing.prepare` to directory `out`; returns meta.json.

  workers: processes (None: one per core; 0 or 1: this process). shard_size:
  at most this many records per shard (fewer when that gives every worker
  work). dtype: "float16" (default, see formats/prepared.py) or "float32". An image contract
  (`ecgjax.data.images.ImagePreprocessing`) stores fitted uint8 pictures of an image source
  instead (formats/prepared_image.py; dtype does not apply).
  """
  image = isinstance(preprocessing, images.ImagePreprocessing)
  if image:
    dtype = image_fmt.DTYPE
  elif dtype not in fmt.DTYPES:
    raise ValueError(f"dtype must be one of {fmt.DTYPES}, got {dtype!r}")
  if shard_size < 1:
    raise ValueError(f"shard_size must be >= 1, got {shard_size}")
  out = os.path.abspath(os.fspath(out))
  if os.path.exists(out) and not overwrite:
    raise FileExistsError(f"{out} already exists; pass overwrite=True "
                          "(--overwrite) to replace it")
  source = open_any(spec)
  n = len(source)
  if n == 0:
    raise ValueError(f"{source!r} has no records")
  if image != (source.modality == "image"):
    raise fmt.PreparedMismatchError(
        f"{source!r} holds {source.modality}s but the contract is "
        f"{'an image' if image else 'a signal'} contract: prepare printouts (image:DIR) with "
        "an image preset (eianet, raw) and signals with a signal preset")
  t0 = time.time()
  per_shard = shard_size
  if workers is None or workers > 1:
    # Small sources: smaller shards, so every worker gets some.
    lanes = workers or os.cpu_count() or 1
    per_shard = min(shard_size, max(64, math.ceil(n / (4 * lanes))))
  chunks = chunk_ranges(n, per_shard)
  workers = default_workers(len(chunks)) if workers is None else min(
      workers, len(chunks))
  tmp = out + ".tmp"
  if os.path.exists(tmp):
    shutil.rmtree(tmp)  # Left by a killed run: it was never renamed to `out`.
  os.makedirs(tmp)
  try:
    state = {"preprocessing": preprocessing, "dtype": dtype, "tmp": tmp}
    results = sorted(
        map_chunks(spec, state, _prepare_image_chunk if image else _prepare_chunk, chunks,
                   workers,
                   f"prepare {os.path.basename(out)}", progress),
        key=lambda r: r["number"])
    bad = [b for r in results for b in r["bad"]]
    fill_bad_ids(source, bad)
    shards = []
    for r in results:
      if r["records"]:
        shards.append(r)
      else:  # An empty shard cannot be memory-mapped.
        os.remove(os.path.join(tmp, r["file"]))
    if not shards:
      raise ValueError(
          f"{source!r}: all {n} records are bad, nothing prepared; e.g. "
          + "; ".join(f"{b['record_id']}: {b['reason']}" for b in bad[:3]))
    count = _write_index(tmp, shards, None if image else len(preprocessing.leads),
                         len(source.label_names))
    meta = {
        "format": fmt.FORMAT_TAG,  # First key: `auto:` detection reads it.
        "format_version": fmt.FORMAT_VERSION,
        "source": str(source.spec or spec),
        "preprocessing": preprocessing.to_dict(),
        "dtype": dtype,
        **({"shape": [preprocessing.height, preprocessing.width, preprocessing.channels]}
           if image else {}),
        "label_names": list(source.label_names),
        "counts": {"source_records": n, "records": count, "bad": len(bad),
                   "shards": len(shards),
                   **({} if image else {"samples": int(sum(s["samples"] for s in shards))})},
        "shards": [{"file": s["file"], "records": len(s["records"]),
                    **({} if image else {"samples": s["samples"]})} for s in shards],
        "bad_records": bad,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.time() - t0, 1),
    }
    with open(os.path.join(tmp, fmt.META_FILE), "w") as f:
      json.dump(meta, f, indent=1)
    _replace(tmp, out)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return meta


def _replace(tmp: str, out: str) -> None:
  """Renames tmp to out; an existing out is moved aside first and removed after."""
  if not os.path.exists(out):
    os.rename(tmp, out)
    return
  old = out + ".old"
  shutil.rmtree(old, ignore_errors=True)
  os.rename(out, old)
  os.rename(tmp, out)
  shutil.rmtree(old, ignore_errors=True)
