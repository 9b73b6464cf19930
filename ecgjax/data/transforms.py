"""Per-record transforms (NumPy, vectorised over leads) and the model input contract.

`Preprocessing` is the contract between data and model: sampling rate, length,
lead order, filter and normalisation. It is stored in model exports
(`to_dict`), so a probe or a deployment applies exactly what pretraining saw.
Everything here is plain NumPy/SciPy: it runs inside grain worker processes.
The signal-processing steps themselves live in `filters` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
from typing import Any

import numpy as np

from ecgjax.data import leads as leads_lib
from ecgjax.data.filters import (
    BANDPASS_DESIGNS,
    BASELINE_METHODS,
    RESAMPLE_METHODS,
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


_STANDARDIZE_MODES = (None, "global", "per_lead")
STANDARDIZE_SCOPES = ("window", "record")
VIEWS = ("crops", "segments")


@dataclasses.dataclass(frozen=True)
class Preprocessing:
  """The model input contract: what every record becomes before a model sees it.

  prepare() runs once per record, in this order:
    1. validate, reorder leads (absent leads -> zeros, flagged in the mask);
       with `head_s`, keep only the record's first head_s seconds (ECGFounder
       takes its 10 s BEFORE filtering: filtering first moves samples by up to 8e-2);
    2. resample to `fs`: every later step is designed at the model's rate,
       so one set of filter coefficients serves every source (and filtering
       after a downsample touches fewer samples);
    3. notch at the mains frequency (`notch`, `notch_q`), then
    4. Butterworth band-pass (`bandpass`, `filter_order`, `bandpass_design`):
       "cascade" = high-pass then low-pass as second-order sections (ST-MEM),
       "butter_ba" = one band-pass design in b/a form through filtfilt
       (ECGFounder). A 40 Hz low-pass alone leaves ~13% of a 50 Hz hum
       (order 4), hence the notch;
    5. median baseline removal (`baseline_window_s`, `baseline_method`):
       non-linear, so it comes last, where neither hum nor the wander the
       high-pass removed can bias the running median;
    6. with standardize_scope "record": z-score the whole prepared record
       (ECG-FM: per lead, statistics including the samples segmentation later
       drops; ECGFounder: the 10 s it keeps).
  finish() runs after cropping: with standardize_scope "window" (ST-MEM) it
  z-scores there, so its statistics describe exactly the window the model sees.

  `views` says how evaluation turns a record into model inputs: "crops" (n
  evenly spaced windows, ST-MEM's 3) or "segments" (every non-overlapping
  window, remainder dropped, ECG-FM's 5 s segments), embeddings averaged.

  Fields added after the first exports default to the behaviour those exports
  had, so older export dicts load unchanged.
  """

  fs: float
  samples: int
  leads: tuple[str, ...] = leads_lib.LEADS_12
  # (high-pass Hz, low-pass Hz); high-pass 0 skips it; None: no filtering.
  bandpass: tuple[float, float] | None = None
  filter_order: int = 5  # Of EACH of the two Butterworth passes.
  standardize: str | None = "global"
  resample_method: str = "fft"  # "fft" | "poly" | "linear".
  notch: float | None = None  # Mains frequency in Hz (50 or 60); None: off.
  notch_q: float = 30.0  # Quality factor: -3 dB width = notch / notch_q.
  baseline_window_s: float | None = None  # Running-median length; None: off.
  bandpass_design: str = "cascade"  # "cascade" (ST-MEM) | "butter_ba" (ECGFounder).
  baseline_method: str = "reflect"  # "reflect" | "medfilt" (ECGFounder's zero-padded).
  standardize_scope: str = "window"  # "window" (after the crop) | "record" (before).
  standardize_eps: float = 0.0  # > 0: divide by std + eps (ECGFounder 1e-8).
  head_s: float | None = None  # Keep only the first head_s seconds (ECGFounder 10).
  views: str = "crops"  # Evaluation inputs: "crops" | "segments".

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
    if self.resample_method not in RESAMPLE_METHODS:
      raise ValueError(f"resample_method must be one of {RESAMPLE_METHODS}, "
                       f"got {self.resample_method!r}")
    set_("notch_q", float(self.notch_q))
    if self.notch is not None:
      set_("notch", float(self.notch))
      if not 0 < self.notch < self.fs / 2:
        raise ValueError(
            f"notch must be in (0, fs/2 = {self.fs / 2}) Hz, got {self.notch}")
    if not self.notch_q > 0:
      raise ValueError(f"notch_q must be > 0, got {self.notch_q}")
    if self.baseline_window_s is not None:
      set_("baseline_window_s", float(self.baseline_window_s))
      if not self.baseline_window_s > 0:
        raise ValueError(
            f"baseline_window_s must be > 0, got {self.baseline_window_s}")
    for name, allowed in (("bandpass_design", BANDPASS_DESIGNS),
                          ("baseline_method", BASELINE_METHODS),
                          ("standardize_scope", STANDARDIZE_SCOPES), ("views", VIEWS)):
      if getattr(self, name) not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
    if self.bandpass_design == "butter_ba" and self.bandpass and not self.bandpass[0]:
      raise ValueError("bandpass_design 'butter_ba' needs a high-pass cutoff > 0 "
                       f"(bandpass={self.bandpass})")
    set_("standardize_eps", float(self.standardize_eps))
    if not self.standardize_eps >= 0:
      raise ValueError(f"standardize_eps must be >= 0, got {self.standardize_eps}")
    if self.head_s is not None:
      set_("head_s", float(self.head_s))
      if not self.head_s > 0:
        raise ValueError(f"head_s must be > 0 seconds, got {self.head_s}")

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
      old, _ = leads_lib.reorder(
          np.asarray(record["lead_mask"], np.float32)[:, None], names, self.leads)
      mask = mask * old[:, 0]
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
  """ST-MEM: 250 Hz (FFT), 2250 samples, 0.67-40 Hz order 5, global z-score."""
  return Preprocessing(fs=250.0, samples=2250, leads=tuple(leads),
                       bandpass=(0.67, 40.0), filter_order=5,
                       standardize="global", resample_method="fft")


def ecg_fm_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12) -> Preprocessing:
  """ECG-FM as fairseq-signals runs it: linear resampling to 500 Hz (its grid), per-lead
  z-score of the WHOLE record (constant lead -> 0), no filter, then every non-overlapping 5 s
  segment (2500 samples, remainder dropped, not re-standardised); a record's embedding is the
  mean of its segments'. A record shorter than 5 s has no segment (a bad record here)."""
  return Preprocessing(fs=500.0, samples=2500, leads=tuple(leads),
                       bandpass=None, standardize="per_lead",
                       resample_method="linear", standardize_scope="record",
                       views="segments")


def ecgfounder_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12,
                             mains: float = 50.0) -> Preprocessing:
  """ECGFounder as its code runs (SPEC section 10): the first 10 s, linear resampling to
  500 Hz with both endpoints spanned (its resample_unequal), filtfilt(iirnotch(mains, 30)),
  ONE butter(4, [0.67, 40], 'bandpass') b/a design through filtfilt, x - medfilt(x, 201)
  (zero-padded edges; kernel int(0.4 fs) + 1 made odd), z-score over (leads, samples) with
  std + 1e-8. A record shorter than 10 s is zero-padded to 5000 after the z-score.
  `mains`: 50 (ECGFounder); 60 for North-American data.
  """
  return Preprocessing(fs=500.0, samples=5000, leads=tuple(leads),
                       bandpass=(0.67, 40.0), filter_order=4, bandpass_design="butter_ba",
                       standardize="global", standardize_eps=1e-8,
                       standardize_scope="record", resample_method="linear_span",
                       notch=mains, notch_q=30.0, baseline_window_s=0.4,
                       baseline_method="medfilt", head_s=10.0)


PRESETS: dict[str, Callable[..., Preprocessing]] = {
    "st_mem": st_mem_preprocessing,
    "ecg_fm": ecg_fm_preprocessing,
    "ecgfounder": ecgfounder_preprocessing,
}


def preset(name: str, leads: Sequence[str] = leads_lib.LEADS_12) -> Preprocessing:
  """The named reference preprocessing ("st_mem", "ecg_fm", "ecgfounder")."""
  try:
    make = PRESETS[name]
  except KeyError:
    raise ValueError(f"unknown preprocessing preset {name!r}; known: "
                     f"{', '.join(sorted(PRESETS))}") from None
  return make(leads)
