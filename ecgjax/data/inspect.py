"""Summarises a source by reading every record once: rates, durations, leads, labels, bad records.

    summary = inspect_source("ptbxl:/data/ptbxl", workers=8)
    print(format_summary(summary))

A record is bad when reading it raises, or when it could not feed a model:
not (leads, samples), empty, non-numeric, NaN/inf samples, a sampling rate
that is not a positive number, lead names that do not match the rows, or a
label vector of the wrong length. Bad records are listed, never raised.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from ecgjax.data import prepare as prepare_lib
from ecgjax.data import sources as sources_lib

_CHUNK = 256  # Records per task: small enough for a smooth progress bar.


def _image_problem(rec: sources_lib.Record, n_labels: int) -> str | None:
  """Why an image record (a printout: `pixels` (H, W, 3) uint8, or (H, W, 1 or 3) when
  prepared) cannot be used, or None."""
  px = np.asarray(rec["pixels"])
  channels = (1, 3) if "prepared" in rec else (3,)
  if px.ndim != 3 or px.shape[2] not in channels or 0 in px.shape or px.dtype != np.uint8:
    return (f"pixels must be (height, width, {' or '.join(map(str, channels))}) uint8, got "
            f"{px.shape} {px.dtype}")
  labels = np.asarray(rec.get("labels", ()), np.float32).reshape(-1)
  if labels.shape[0] != n_labels:
    return f"has {labels.shape[0]} labels, the source declares {n_labels}"
  return None


def _problem(rec: sources_lib.Record, n_labels: int) -> str | None:
  """Why a record that was read cannot be used, or None."""
  if "pixels" in rec:
    return _image_problem(rec, n_labels)
  x = np.asarray(rec.get("signal"))
  if x.ndim != 2 or 0 in x.shape:
    return f"signal must be (leads, samples), got shape {x.shape}"
  if not np.issubdtype(x.dtype, np.number):
    return f"signal has non-numeric dtype {x.dtype}"
  bad = ~np.isfinite(x)
  if bad.any():
    return (f"signal has {int(bad.sum())} NaN/inf values (rows "
            f"{np.flatnonzero(bad.any(axis=1)).tolist()})")
  try:
    fs = float(rec.get("fs"))
  except (TypeError, ValueError):
    return f"bad or missing sampling rate fs={rec.get('fs')!r}"
  if not np.isfinite(fs) or fs <= 0:
    return f"bad sampling rate fs={fs!r}"
  leads = rec.get("leads")
  if leads is not None and len(leads) != x.shape[0]:
    return f"{len(leads)} lead names for {x.shape[0]} signal rows"
  labels = np.asarray(rec.get("labels", ()), np.float32).reshape(-1)
  if labels.shape[0] != n_labels:
    return f"has {labels.shape[0]} labels, the source declares {n_labels}"
  return None


def _present_leads(rec: sources_lib.Record, rows: int) -> str:
  """The leads a record really has: its names where lead_mask is 1 (readers put absent leads
  in as zero rows with mask 0), e.g. "I,II,V1" for a 3-lead record read into 12 slots."""
  names = rec.get("leads")
  if names is None:
    return f"{rows} unnamed"
  mask = rec.get("lead_mask")
  if mask is not None:
    mask = np.asarray(mask).reshape(-1)
    if mask.shape[0] == len(names):
      names = [n for n, m in zip(names, mask) if m > 0]
  return ",".join(names) or "none (every lead masked)"


def _derived_leads(rec: sources_lib.Record) -> str:
  """The leads the reader computed from others (`derived_mask` 1), "" when none."""
  mask, names = rec.get("derived_mask"), rec.get("leads")
  if mask is None or names is None:
    return ""
  return ",".join(n for n, m in zip(names, np.asarray(mask).reshape(-1)) if m > 0)


def _inspect_chunk(chunk: tuple[int, int, int]) -> dict[str, Any]:
  """Per-record facts of one chunk (runs in a worker process)."""
  _, start, stop = chunk
  source = prepare_lib.worker_source()
  n_labels = len(source.label_names)
  out = {"fs": [], "samples": [], "leads": [], "derived": [], "amplitude": [], "labels": [],
         "bad": [], "image_sizes": []}
  for i in range(start, stop):
    try:
      rec = source[i]
      why = _problem(rec, n_labels)
      rid = rec.get("record_id")
    except sources_lib.BadRecordError as e:
      why, rid = e.reason, e.record_id
    except Exception as e:  # pylint: disable=broad-except
      # A reader bug or an unexpected file: report it like any bad record.
      why, rid = f"{type(e).__name__}: {e}", None
    if why is not None:
      out["bad"].append({"index": i, "record_id": rid, "reason": why})
      continue
    if "pixels" in rec:  # a printout: its size instead of rates, durations and amplitudes
      h, w = np.shape(rec["pixels"])[:2]
      out["image_sizes"].append(f"{w}x{h}")
      out["labels"].append(np.asarray(rec.get("labels", ()), np.float32).reshape(-1))
      continue
    x = np.asarray(rec["signal"])
    out["fs"].append(float(rec["fs"]))
    out["samples"].append(x.shape[1])
    out["leads"].append(_present_leads(rec, x.shape[0]))
    out["derived"].append(_derived_leads(rec))
    out["amplitude"].append(float(np.abs(x).max()))
    out["labels"].append(np.asarray(rec.get("labels", ()), np.float32).reshape(-1))
  return out


def _stats(values: np.ndarray, digits: int = 3) -> dict[str, float]:
  if not len(values):
    return {}
  return {k: round(float(f(values)), digits) for k, f in
          (("min", np.min), ("median", np.median), ("max", np.max))}


def inspect_source(spec: prepare_lib.SourceArg, *, workers: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
  """JSON-able summary of every record of `spec` (see the module docstring)."""
  source = prepare_lib.open_any(spec)
  n = len(source)
  chunks = prepare_lib.chunk_ranges(n, _CHUNK)
  workers = prepare_lib.default_workers(len(chunks)) if workers is None else workers
  parts = list(prepare_lib.map_chunks(spec, {}, _inspect_chunk, chunks, workers,
                                      f"inspect {source.spec or spec}", progress))
  merged = {k: [v for p in parts for v in p[k]] for k in parts[0]} if parts else (
      collections.defaultdict(list))
  bad = sorted(merged["bad"], key=lambda b: b["index"])
  prepare_lib.fill_bad_ids(source, bad)
  fs = np.asarray(merged["fs"], np.float64)
  samples = np.asarray(merged["samples"], np.float64)
  names = tuple(source.label_names)
  labels = (np.stack(merged["labels"]) if merged["labels"]
            else np.zeros((0, len(names)), np.float32))
  sizes = merged["image_sizes"]
  out = {
      "spec": str(source.spec or spec),
      "source_records": n,
      "records": int(len(fs)) + len(sizes),
      "bad_count": len(bad),
      "sampling_rates": {f"{r:g}": int(c) for r, c in
                         zip(*np.unique(fs, return_counts=True))},
      "durations_s": _stats(samples / fs if len(fs) else samples),
      "samples": _stats(samples, 0),
      "leads": dict(collections.Counter(merged["leads"]).most_common()),
      # Records whose file did not store some leads (8-lead exports): which were computed.
      "derived_leads": dict(collections.Counter(d for d in merged["derived"] if d)
                            .most_common()),
      "labels": {name: int((labels[:, j] > 0).sum()) for j, name in enumerate(names)},
      # Largest |sample| per record, in the source's units (mV expected): a
      # median of hundreds means uV or raw ADC counts.
      "max_abs_amplitude": _stats(np.asarray(merged["amplitude"])),
      "bad": [{"index": b["index"], "path": b["record_id"], "reason": b["reason"]}
              for b in bad],
  }
  if sizes:
    # Image records: their pixel sizes, and the ones without a label row (labels NaN).
    out["image_sizes"] = dict(collections.Counter(sizes).most_common())
    out["unlabelled"] = int(np.isnan(labels).any(axis=1).sum()) if names else len(sizes)
  return out


def format_summary(summary: dict[str, Any], max_bad: int = 50) -> str:
  """Human-readable text of an `inspect_source` summary."""
  s = summary
  lines = [f"{s['spec']}: {s['records']} good records of {s['source_records']}"
           f" ({s['bad_count']} bad)"]
  def table(title, counts):
    lines.append(f"{title}:")
    lines.extend(f"  {k:<40} {v}" for k, v in counts.items())
  if s["sampling_rates"]:
    table("sampling rates (Hz: records)", s["sampling_rates"])
  d = s["durations_s"]
  if d:
    lines.append(f"durations (s): min {d['min']:g}, median {d['median']:g}, "
                 f"max {d['max']:g}")
  a = s["max_abs_amplitude"]
  if a:
    lines.append(f"max |sample| per record: min {a['min']:g}, median "
                 f"{a['median']:g}, max {a['max']:g}")
  if s["leads"]:
    table("leads (lead set: records)", s["leads"])
  if s.get("derived_leads"):
    table("derived from the stored leads (lead set: records)", s["derived_leads"])
  if s.get("image_sizes"):
    table("image sizes (width x height: records)", s["image_sizes"])
    lines.append(f"unlabelled images: {s['unlabelled']}")
  if s["labels"]:
    table("labels (name: positives)", s["labels"])
  if s["bad"]:
    lines.append(f"unreadable or unusable records ({len(s['bad'])}):")
    lines.extend(f"  {b['path']}: {b['reason']}" for b in s["bad"][:max_bad])
    if len(s["bad"]) > max_bad:
      lines.append(f"  ... and {len(s['bad']) - max_bad} more (--json lists all)")
  return "\n".join(lines)
