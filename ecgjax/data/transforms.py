"""Per-record transforms (NumPy, vectorised over leads) and the model input contract.

`Preprocessing` is the contract between data and model: sampling rate, length,
lead order, filter and normalisation. It is stored in model exports
(`to_dict`), so a probe or a deployment applies exactly what pretraining saw.
Everything here is plain NumPy/SciPy: it runs inside grain worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
from typing import Any

import numpy as np
from scipy import signal as sp_signal

from ecgjax.data import leads as leads_lib
from ecgjax.data.sources import BadRecordError, Record


def resample(x: np.ndarray, fs_in: float, fs_out: float,
             method: str = "fft") -> np.ndarray:
  """Resamples along the last axis from fs_in to fs_out ("fft" or "linear")."""
  if fs_in <= 0 or fs_out <= 0:
    raise ValueError(f"sampling rates must be > 0, got {fs_in} -> {fs_out}")
  n = x.shape[-1]
  m = int(round(n * fs_out / fs_in))
  if m == n:
    return x
  if m < 1:
    raise ValueError(f"{n} samples at {fs_in} Hz leave nothing at {fs_out} Hz")
  if method == "fft":
    return sp_signal.resample(x, m, axis=-1).astype(x.dtype, copy=False)
  if method == "linear":
    pos = np.arange(m) * (fs_in / fs_out)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    frac = (pos - i0).astype(x.dtype)
    return x[..., i0] * (1 - frac) + x[..., i1] * frac
  raise ValueError(f"unknown resample method {method!r}; use 'fft' or 'linear'")


@functools.lru_cache(maxsize=64)
def _butter_sos(kind: str, cutoff: float, fs: float,
                order: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Second-order sections, their unit-step initial state, scipy's pad length."""
  sos = sp_signal.butter(order, cutoff, btype=kind, fs=fs, output="sos")
  taps = 2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum())
  return sos, sp_signal.sosfilt_zi(sos), 3 * int(taps)


def _filtfilt(design: tuple[np.ndarray, np.ndarray, int],
              x: np.ndarray) -> np.ndarray:
  """scipy.signal.sosfiltfilt along the last axis (odd extension, steady-state start).

  Same algorithm as scipy's, with the filter design and its initial state
  cached: this runs for every training record and scipy recomputes both.
  """
  sos, zi, padlen = design
  # Records shorter than scipy's pad length still filter (scipy would refuse).
  padlen = min(padlen, x.shape[-1] - 1)
  if padlen > 0:
    left = 2 * x[..., :1] - x[..., padlen:0:-1]
    right = 2 * x[..., -1:] - x[..., -2:-padlen - 2:-1]
    x = np.concatenate([left, x, right], axis=-1)
  # (sections, 1, ..., 2): broadcast over the leading (lead) axes.
  zi = zi.reshape((len(sos),) + (1,) * (x.ndim - 1) + (2,))
  y, _ = sp_signal.sosfilt(sos, x, axis=-1, zi=zi * x[None, ..., :1])
  y = y[..., ::-1]
  y, _ = sp_signal.sosfilt(sos, y, axis=-1, zi=zi * y[None, ..., :1])
  y = y[..., ::-1]
  return y[..., padlen:y.shape[-1] - padlen] if padlen > 0 else y


def bandpass(x: np.ndarray, fs: float, low: float | None, high: float | None,
             order: int = 5) -> np.ndarray:
  """Zero-phase Butterworth high-pass at `low`, then low-pass at `high` (None: skip).

  Two separate order-`order` filters, as ST-MEM does, not one band-pass design
  (which would double the order).
  """
  if high is not None and high >= fs / 2:
    raise ValueError(f"low-pass cutoff {high} Hz must be below fs/2 = {fs / 2} Hz")
  y = np.asarray(x, dtype=np.float64)
  if low:
    y = _filtfilt(_butter_sos("highpass", float(low), float(fs), order), y)
  if high:
    y = _filtfilt(_butter_sos("lowpass", float(high), float(fs), order), y)
  return y.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)


def standardize(x: np.ndarray, mode: str = "global") -> np.ndarray:
  """Z-score over the whole array ("global") or per lead; constant input -> 0."""
  if mode == "global":
    axis = None
  elif mode == "per_lead":
    axis = -1
  else:
    raise ValueError(f"unknown standardize mode {mode!r}; use 'global' or 'per_lead'")
  mean = x.mean(axis=axis, keepdims=True, dtype=np.float64)
  std = x.std(axis=axis, keepdims=True, dtype=np.float64)  # ddof=0.
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


_STANDARDIZE_MODES = (None, "global", "per_lead")
_RESAMPLE_METHODS = ("fft", "linear")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """The model input contract: what every record becomes before a model sees it.

  prepare() runs once per record (validate, reorder leads, resample, filter);
  finish() runs after cropping (standardise, so its statistics describe
  exactly the window the model sees, padding included).
  """

  fs: float
  samples: int
  leads: tuple[str, ...] = leads_lib.LEADS_12
  # (high-pass Hz, low-pass Hz); high-pass 0 skips it; None: no filtering.
  bandpass: tuple[float, float] | None = None
  filter_order: int = 5
  standardize: str | None = "global"
  resample_method: str = "fft"

  def __post_init__(self):
    # Normalise types (lists from JSON, ints for rates) so equality and
    # hashing behave; frozen, hence object.__setattr__.
    set_ = functools.partial(object.__setattr__, self)
    set_("fs", float(self.fs))
    set_("samples", int(self.samples))
    set_("filter_order", int(self.filter_order))
    set_("leads", leads_lib.parse_leads(self.leads))
    if not (self.fs > 0 and self.samples > 0 and self.filter_order > 0):
      raise ValueError(
          f"fs, samples and filter_order must be > 0, got {self.fs}, "
          f"{self.samples}, {self.filter_order}")
    if self.bandpass is not None:
      band = tuple(float(f) for f in self.bandpass)
      if len(band) != 2 or not 0 <= band[0] < band[1] < self.fs / 2:
        raise ValueError(
            "bandpass must be (low, high) with 0 <= low < high < fs/2 = "
            f"{self.fs / 2} (low 0: no high-pass), got {self.bandpass}")
      set_("bandpass", band)
    if self.standardize not in _STANDARDIZE_MODES:
      raise ValueError(f"standardize must be one of {_STANDARDIZE_MODES}, "
                       f"got {self.standardize!r}")
    if self.resample_method not in _RESAMPLE_METHODS:
      raise ValueError(f"resample_method must be one of {_RESAMPLE_METHODS}, "
                       f"got {self.resample_method!r}")

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict (stored in model exports)."""
    d = dataclasses.asdict(self)
    d["leads"] = list(self.leads)
    d["bandpass"] = list(self.bandpass) if self.bandpass else None
    return d

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> Preprocessing:
    """Inverse of to_dict; unknown keys (e.g. from a newer export) are an error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(
          f"unknown Preprocessing keys {unknown}; known: {sorted(known)}")
    d = dict(d)
    if d.get("leads") is not None:
      d["leads"] = tuple(d["leads"])
    if d.get("bandpass") is not None:
      d["bandpass"] = tuple(d["bandpass"])
    return cls(**d)

  def prepare(self, record: Record) -> tuple[np.ndarray, np.ndarray]:
    """Validate, reorder leads, resample, filter -> (x float32 (leads, n), mask)."""
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
      old, _ = leads_lib.reorder(
          np.asarray(record["lead_mask"], np.float32)[:, None], names, self.leads)
      mask = mask * old[:, 0]
    if abs(fs - self.fs) > 1e-6 * self.fs:
      x = resample(x, fs, self.fs, self.resample_method)
    if self.bandpass is not None:
      x = bandpass(x, self.fs, *self.bandpass, order=self.filter_order)
    return np.ascontiguousarray(x, dtype=np.float32), mask.astype(np.float32)

  def finish(self, x: np.ndarray) -> np.ndarray:
    """Standardises a cropped window (no-op when standardize is None)."""
    if self.standardize is None:
      return x.astype(np.float32, copy=False)
    return standardize(x, self.standardize)

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


def st_mem_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12) -> Preprocessing:
  """ST-MEM: 250 Hz (FFT), 2250 samples, 0.67-40 Hz order 5, global z-score."""
  return Preprocessing(fs=250.0, samples=2250, leads=tuple(leads),
                       bandpass=(0.67, 40.0), filter_order=5,
                       standardize="global", resample_method="fft")


def ecg_fm_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12) -> Preprocessing:
  """ECG-FM: 500 Hz (linear), 2500 samples (5 s), no filter, per-lead z-score."""
  return Preprocessing(fs=500.0, samples=2500, leads=tuple(leads),
                       bandpass=None, standardize="per_lead",
                       resample_method="linear")


# ECGFounder (SPEC section 3) also needs a 50 Hz notch and a 0.4 s median-filter
# baseline removal; those steps are not in the contract yet, so there is no
# preset for it until they are.
