"""Per-record transforms (NumPy, vectorised over leads) that carry out the input contract.

`Preprocessing` is `ecgjax.contract.InputContract` (sampling rate, length, lead order,
filter and normalisation, stored in model exports) plus the processing that applies it, so
a probe or a deployment applies exactly what pretraining saw. Everything here is plain
NumPy/SciPy: it runs inside grain worker processes. The signal-processing steps themselves
live in `filters` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np

from ecgjax import contract as contract_lib
from ecgjax import leads as leads_lib
from ecgjax.data.filters import (
    bandpass,
    median_baseline,
    median_window,
    notch,
    remove_baseline,
    resample,
)
from ecgjax.data.sources import BadRecordError, Record

__all__ = [
    "PRESETS", "Preprocessing", "STANDARDIZE_SCOPES", "VIEWS", "bandpass", "crop_or_pad",
    "crop_starts",
    "ecg_fm_preprocessing", "ecgfounder_preprocessing", "median_baseline",
    "median_window", "notch", "preset", "random_crop", "remove_baseline",
    "resample", "segments", "st_mem_preprocessing", "standardize",
]


def standardize(x: np.ndarray, mode: str = "global", eps: float = 0.0) -> np.ndarray:
  """Z-score over the whole array ("global") or per lead (population std, ddof 0).

  eps 0: a constant (std below 1e-8, i.e. flat up to rounding) input -> 0, the rule of ST-MEM
  and of ECG-FM's 'zero' constant-lead strategy. eps > 0: (x - mean) / (std + eps) as
  ECGFounder computes it (eps 1e-8).
  """
  if mode == "global":
    axis = None
  elif mode == "per_lead":
    axis = -1
  else:
    raise ValueError(f"unknown standardize mode {mode!r}; use 'global' or 'per_lead'")
  mean = x.mean(axis=axis, keepdims=True, dtype=np.float64)
  std = x.std(axis=axis, keepdims=True, dtype=np.float64)  # ddof=0.
  if eps > 0:
    return ((x - mean) / (std + eps)).astype(np.float32)
  # A flat (or all-zero, e.g. missing) lead has std 0: emit zeros, not NaN.
  scale = np.where(std > 1e-8, 1.0 / np.maximum(std, 1e-8), 0.0)
  return ((x - mean) * scale).astype(np.float32)


def crop_or_pad(x: np.ndarray, n: int, start: int = 0) -> np.ndarray:
  """Takes `n` samples from `start`; zero-pads on the right when too short."""
  seg = x[..., start:start + n]
  if seg.shape[-1] == n:
    return seg
  pad = [(0, 0)] * (x.ndim - 1) + [(0, n - seg.shape[-1])]
  return np.pad(seg, pad)


def random_crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
  """A uniformly placed window of `n` samples (zero-padded when shorter)."""
  slack = x.shape[-1] - n
  start = int(rng.integers(0, slack + 1)) if slack > 0 else 0
  return crop_or_pad(x, n, start)


def crop_starts(length: int, n: int, n_crops: int) -> np.ndarray:
  """Evenly spaced crop starts covering the record (2500 -> 2250 x3: 0, 125, 250)."""
  if n_crops < 1:
    raise ValueError(f"n_crops must be >= 1, got {n_crops}")
  slack = max(length - n, 0)
  if n_crops == 1:
    return np.zeros(1, dtype=np.int64)
  return np.round(np.linspace(0, slack, n_crops)).astype(np.int64)


def segments(x: np.ndarray, n: int) -> np.ndarray:
  """Non-overlapping windows (k, leads, n) from the start, remainder dropped (ECG-FM).

  A record shorter than `n` gives k = 0 (an empty array), not a padded
  segment: ECG-FM trains on whole 5 s segments only.
  """
  if n < 1:
    raise ValueError(f"segment length must be >= 1, got {n}")
  k = x.shape[-1] // n
  # (leads, k, n) -> (k, leads, n): a view until the transpose copies.
  return np.ascontiguousarray(
      np.moveaxis(x[..., :k * n].reshape(x.shape[:-1] + (k, n)), -2, 0))


STANDARDIZE_SCOPES = contract_lib.STANDARDIZE_SCOPES
VIEWS = contract_lib.VIEWS


@dataclasses.dataclass(frozen=True)
class Preprocessing(contract_lib.InputContract):
  """An `ecgjax.contract.InputContract` that processes records (see its docstring for the
  order of the steps): prepare -> crop -> finish, in NumPy/SciPy inside grain workers."""

  @classmethod
  def of(cls, contract: contract_lib.InputContract) -> Preprocessing:
    """The processing for a plain contract (an export's or a preset's)."""
    return cls.from_dict(contract.to_dict())

  def prepare(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
    """Validate, reorder, resample, notch, band-pass, baseline -> (x (leads, n), mask)."""
    rid = record.get("record_id", "<no record_id>")
    if "signal" not in record:
      raise BadRecordError(rid, "has no 'signal'")
    x = np.asarray(record["signal"])
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
      raise BadRecordError(rid, f"signal must be (leads, samples), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
      raise BadRecordError(rid, f"signal has non-numeric dtype {x.dtype}")
    fs = record.get("fs")
    try:
      fs = float(fs)
    except (TypeError, ValueError):
      raise BadRecordError(rid, f"bad or missing sampling rate fs={fs!r}") from None
    if not np.isfinite(fs) or fs <= 0:
      raise BadRecordError(rid, f"bad sampling rate fs={fs!r}")
    x = x.astype(np.float32, copy=False)
    finite = np.isfinite(x)
    if not finite.all():
      lead_rows = np.flatnonzero(~finite.all(axis=1)).tolist()
      raise BadRecordError(
          rid, f"signal has {int((~finite).sum())} NaN/inf values (rows {lead_rows})")
    names = record.get("leads")
    if names is None:
      if x.shape[0] != 12:
        raise BadRecordError(rid, f"{x.shape[0]} unnamed leads (give 'leads')")
      names = leads_lib.LEADS_12
    try:
      x, mask = leads_lib.reorder(x, names, self.leads)
    except ValueError as e:
      raise BadRecordError(rid, str(e)) from None
    if record.get("lead_mask") is not None:
      mask = leads_lib.reorder_flags(record["lead_mask"], names, self.leads)
    if self.head_s is not None:
      x = x[..., :max(int(round(self.head_s * fs)), 1)]
    if abs(fs - self.fs) > 1e-6 * self.fs:
      x = resample(x, fs, self.fs, self.resample_method)
    if self.notch is not None:
      x = notch(x, self.fs, self.notch, self.notch_q)
    if self.bandpass is not None:
      x = bandpass(x, self.fs, *self.bandpass, order=self.filter_order,
                   design=self.bandpass_design)
    if self.baseline_window_s is not None:
      x = remove_baseline(x, self.fs, self.baseline_window_s, self.baseline_method)
    if self.standardize is not None and self.standardize_scope == "record":
      x = standardize(x, self.standardize, self.standardize_eps)
    return np.ascontiguousarray(x, dtype=np.float32), mask.astype(np.float32)

  def finish(self, x: np.ndarray) -> np.ndarray:
    """Standardises a cropped window (no-op without standardize or when the record was)."""
    if self.standardize is None or self.standardize_scope == "record":
      return x.astype(np.float32, copy=False)
    return standardize(x, self.standardize, self.standardize_eps)

  def process(self, record: Record, rng: np.random.Generator | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
    """prepare -> random crop (rng) or crop at 0 -> finish; returns (x, lead_mask)."""
    x, mask = self.prepare(record)
    x = random_crop(x, self.samples, rng) if rng is not None else crop_or_pad(
        x, self.samples)
    return self.finish(x), mask

  def __call__(self, record: Record,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """float32 (leads, samples) model input for one record."""
    return self.process(record, rng)[0]

  def crops(self, record: Record, n_crops: int) -> np.ndarray:
    """float32 (n_crops, leads, samples): evenly spaced crops for n-crop evaluation."""
    x, _ = self.prepare(record)
    return self.crops_of(x, n_crops)

  def crops_of(self, x: np.ndarray, n_crops: int) -> np.ndarray:
    """n-crop windows of an already prepared signal."""
    starts = crop_starts(x.shape[-1], self.samples, n_crops)
    return np.stack([self.finish(crop_or_pad(x, self.samples, s)) for s in starts])

  def segments(self, record: Record) -> np.ndarray:
    """float32 (k, leads, samples): every whole non-overlapping window, each finished."""
    x, _ = self.prepare(record)
    return self.segments_of(x)

  def segments_of(self, x: np.ndarray) -> np.ndarray:
    """Non-overlapping windows of an already prepared signal (k may be 0)."""
    segs = segments(x, self.samples)
    if not len(segs):
      return segs.astype(np.float32, copy=False)
    return np.stack([self.finish(s) for s in segs])

  def views_of(self, x: np.ndarray, n_crops: int = 1) -> np.ndarray:
    """Evaluation inputs (k, leads, samples) of a prepared signal: `n_crops` crops, or every
    whole segment ("segments"; k = 0 for a record shorter than one segment)."""
    if self.views == "segments":
      return self.segments_of(x)
    return self.crops_of(x, n_crops)


def st_mem_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12) -> Preprocessing:
  """ST-MEM's pipeline (`ecgjax.contract.st_mem_preprocessing`)."""
  return Preprocessing.of(contract_lib.st_mem_preprocessing(leads))


def ecg_fm_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12) -> Preprocessing:
  """ECG-FM's pipeline (`ecgjax.contract.ecg_fm_preprocessing`)."""
  return Preprocessing.of(contract_lib.ecg_fm_preprocessing(leads))


def ecgfounder_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12,
                             mains: float = 50.0) -> Preprocessing:
  """ECGFounder's pipeline (`ecgjax.contract.ecgfounder_preprocessing`)."""
  return Preprocessing.of(contract_lib.ecgfounder_preprocessing(leads, mains))


PRESETS = contract_lib.PRESETS


def preset(name: str, leads: Sequence[str] = leads_lib.LEADS_12) -> Preprocessing:
  """The named reference preprocessing ("st_mem", "ecg_fm", "ecgfounder")."""
  return Preprocessing.of(contract_lib.preset(name, leads))
