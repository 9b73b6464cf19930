"""Signal-processing primitives: resampling, zero-phase filters, baseline removal.

All functions work along the last (time) axis and broadcast over any leading
(lead) axes; filter designs are cached because they run for every training
record inside grain workers. Each one matches the scipy routine the reference
pipelines call (SPEC section 10; tested against those calls on real records), so a model
trained here sees the same input as the published one.
"""

from __future__ import annotations

import fractions
import functools

import numpy as np

from ecgjax import lazy
from ecgjax.contract import BANDPASS_DESIGNS, BASELINE_METHODS, RESAMPLE_METHODS


# Imported on first use (ecgjax.lazy): most processes importing ecgjax.data never filter.
ndimage = lazy.LazyModule("scipy.ndimage")
sp_signal = lazy.LazyModule("scipy.signal")


def _float_like(x: np.ndarray) -> np.dtype:
  """The dtype to hand back: the input's when floating, else float32."""
  return x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype(np.float32)


@functools.lru_cache(maxsize=64)
def _poly_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
  """(up, down): the rational approximation of fs_out / fs_in."""
  # Rates like 500 -> 250 or 360 -> 250 are exact small fractions; the limit
  # only matters for odd rates (e.g. 257.3 Hz), where the length error it adds
  # stays below one sample for records under ~10^6 samples.
  ratio = fractions.Fraction(fs_out / fs_in).limit_denominator(1000)
  return ratio.numerator, ratio.denominator


def resampled_length(n: int, fs_in: float, fs_out: float, method: str = "fft") -> int:
  """Samples `resample` returns for n input samples: int(n * fs_out / fs_in) for "linear"
  (fairseq-signals' rule, so CODE-15's 2934 samples at 400 Hz give 3667 at 500), else
  round(n * fs_out / fs_in)."""
  exact = n * fs_out / fs_in
  return int(exact) if method == "linear" else int(round(exact))


def _interp_last_axis(x: np.ndarray, xp: np.ndarray, xq: np.ndarray) -> np.ndarray:
  """Piecewise-linear interpolation along the last axis (scipy interp1d kind='linear') of
  samples at increasing positions xp, read at positions xq inside [xp[0], xp[-1]]."""
  n = xp.shape[0]
  if n == 1:
    return np.repeat(x[..., :1], len(xq), axis=-1).astype(np.float64)
  idx = np.clip(np.searchsorted(xp, xq, side="right") - 1, 0, n - 2)
  t = (xq - xp[idx]) / (xp[idx + 1] - xp[idx])
  y = np.asarray(x, np.float64)
  return y[..., idx] * (1.0 - t) + y[..., idx + 1] * t


def resample(x: np.ndarray, fs_in: float, fs_out: float,
             method: str = "fft") -> np.ndarray:
  """Resamples along the last axis from fs_in to fs_out.

  "fft": scipy.signal.resample (ST-MEM). "poly": scipy.signal.resample_poly with up/down the
  rational approximation of fs_out/fs_in (no wrap-around at the record edges, unlike FFT).
  "linear": fairseq-signals' (ECG-FM) linear interpolation: m = int(n * fs_out / fs_in)
  outputs; the n inputs sit at np.linspace(0, m - 1, n) and are read back at 0, 1, ..., m - 1.
  "linear_span": ECGFounder's `resample_unequal`: old and new samples both span the record
  with both endpoints included (np.linspace(0, t, n) -> np.linspace(0, t, m)), m =
  round(n * fs_out / fs_in). Lengths: `resampled_length`.
  """
  if fs_in <= 0 or fs_out <= 0:
    raise ValueError(f"sampling rates must be > 0, got {fs_in} -> {fs_out}")
  if method not in RESAMPLE_METHODS:
    raise ValueError(f"unknown resample method {method!r}; use one of {RESAMPLE_METHODS}")
  n = x.shape[-1]
  m = resampled_length(n, fs_in, fs_out, method)
  if m == n:
    return x
  if m < 1:
    raise ValueError(f"{n} samples at {fs_in} Hz leave nothing at {fs_out} Hz")
  if method == "fft":
    return sp_signal.resample(x, m, axis=-1).astype(_float_like(x), copy=False)
  if method == "poly":
    up, down = _poly_ratio(float(fs_in), float(fs_out))
    y = sp_signal.resample_poly(x, up, down, axis=-1)
    # scipy returns ceil(n * up / down) samples; keep the contract's length.
    if y.shape[-1] < m:
      y = np.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, m - y.shape[-1])], mode="edge")
    return y[..., :m].astype(_float_like(x), copy=False)
  if method == "linear":
    y = _interp_last_axis(x, np.linspace(0, m - 1, n), np.arange(m, dtype=np.float64))
  else:  # linear_span: both grids on [0, 1] (the duration cancels).
    y = _interp_last_axis(x, np.linspace(0, 1, n), np.linspace(0, 1, m))
  return y.astype(_float_like(x), copy=False)


@functools.lru_cache(maxsize=64)
def _butter_sos(kind: str, cutoff: float, fs: float,
                order: int) -> tuple[np.ndarray, np.ndarray, int]:
  """Second-order sections, their unit-step initial state, scipy's pad length."""
  sos = sp_signal.butter(order, cutoff, btype=kind, fs=fs, output="sos")
  taps = 2 * len(sos) + 1 - min((sos[:, 2] == 0).sum(), (sos[:, 5] == 0).sum())
  return sos, sp_signal.sosfilt_zi(sos), 3 * int(taps)


def _sosfiltfilt(design: tuple[np.ndarray, np.ndarray, int],
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


@functools.lru_cache(maxsize=16)
def _butter_band_ba(low: float, high: float, fs: float,
                    order: int) -> tuple[np.ndarray, np.ndarray]:
  return sp_signal.butter(order, [low, high], btype="bandpass", fs=fs)


def bandpass_ba(x: np.ndarray, fs: float, low: float, high: float,
                order: int = 4) -> np.ndarray:
  """ECGFounder's band-pass: ONE butter(order, [low, high], 'bandpass') design in b/a form
  (a 2*order-th order filter) through scipy.signal.filtfilt with its default padding
  (3 * len(a) samples, odd extension; shorter records pad what they can)."""
  if not 0 < low < high < fs / 2:
    raise ValueError(f"band-pass needs 0 < {low} < {high} < fs/2 = {fs / 2} Hz")
  b, a = _butter_band_ba(float(low), float(high), float(fs), int(order))
  y = np.asarray(x, dtype=np.float64)
  padlen = min(3 * max(len(a), len(b)), y.shape[-1] - 1)
  y = sp_signal.filtfilt(b, a, y, axis=-1, padlen=max(padlen, 0))
  return y.astype(_float_like(np.asarray(x)), copy=False)


def bandpass(x: np.ndarray, fs: float, low: float | None, high: float | None,
             order: int = 5, design: str = "cascade") -> np.ndarray:
  """Zero-phase Butterworth band-pass; `design` picks how.

  "cascade" (ST-MEM): a high-pass at `low`, then a low-pass at `high` (None/0: skip one), each
  of order `order`, as second-order sections through sosfiltfilt. "butter_ba" (ECGFounder):
  one band-pass design of order `order` in b/a form through filtfilt (`bandpass_ba`); both
  cutoffs are needed. The two differ by up to a few percent near the record edges.
  """
  if design not in BANDPASS_DESIGNS:
    raise ValueError(f"unknown band-pass design {design!r}; use one of {BANDPASS_DESIGNS}")
  if high is not None and high >= fs / 2:
    raise ValueError(f"low-pass cutoff {high} Hz must be below fs/2 = {fs / 2} Hz")
  if design == "butter_ba":
    if not low or not high:
      raise ValueError("the butter_ba band-pass needs both cutoffs (low > 0 and high)")
    return bandpass_ba(x, fs, low, high, order)
  y = np.asarray(x, dtype=np.float64)
  if low:
    y = _sosfiltfilt(_butter_sos("highpass", float(low), float(fs), int(order)), y)
  if high:
    y = _sosfiltfilt(_butter_sos("lowpass", float(high), float(fs), int(order)), y)
  return y.astype(_float_like(np.asarray(x)), copy=False)


@functools.lru_cache(maxsize=16)
def _notch_ba(f0: float, q: float, fs: float) -> tuple[np.ndarray, np.ndarray]:
  return sp_signal.iirnotch(f0, q, fs=fs)


def notch(x: np.ndarray, fs: float, f0: float = 50.0, q: float = 30.0) -> np.ndarray:
  """Zero-phase IIR notch at f0 Hz: scipy's filtfilt(iirnotch(f0, q)) along time.

  ECGFounder uses 50 Hz, Q 30 (-3 dB width f0/Q = 1.7 Hz); pass 60 for
  North-American mains.
  """
  if not 0 < f0 < fs / 2:
    raise ValueError(f"notch frequency {f0} Hz must be in (0, fs/2 = {fs / 2})")
  if q <= 0:
    raise ValueError(f"notch quality factor must be > 0, got {q}")
  b, a = _notch_ba(float(f0), float(q), float(fs))
  y = np.asarray(x, dtype=np.float64)
  # scipy's default pad (3 * filter length = 9) unless the record is shorter.
  padlen = min(3 * max(len(a), len(b)), y.shape[-1] - 1)
  y = sp_signal.filtfilt(b, a, y, axis=-1, padlen=max(padlen, 0))
  return y.astype(_float_like(np.asarray(x)), copy=False)


def median_window(fs: float, seconds: float, method: str = "reflect") -> int:
  """Median-filter length for `seconds` at fs, made odd (0.4 s at 500 Hz -> 201).

  "reflect": round(seconds * fs); "medfilt": ECGFounder's int(seconds * fs) + 1. Either is
  made odd by adding one.
  """
  if method not in BASELINE_METHODS:
    raise ValueError(f"unknown baseline method {method!r}; use one of {BASELINE_METHODS}")
  w = int(seconds * fs) + 1 if method == "medfilt" else max(int(round(seconds * fs)), 1)
  # An odd window has a centre sample, so the baseline is not shifted in time.
  return w if w % 2 else w + 1


def _lead_wise_median(x: np.ndarray, window: int, edges: str) -> np.ndarray:
  """Running median of every lead along time, each lead padded by window // 2 at both ends
  ("symmetric": mirrored; "zeros") and the leads laid end to end for ONE 1-D filter: scipy's
  1-D median filter has a fast running-median path (~2 ms for 12 x 5000, window 201) while the
  N-D one sorts every window (~65 ms). A window centred in one lead's samples reaches at most
  window // 2 past them, into that lead's own padding and never into the next lead."""
  if window < 1 or window % 2 == 0:
    raise ValueError(f"median window must be odd and >= 1, got {window}")
  x = np.asarray(x)
  if window == 1:
    return x.copy()
  h, n = window // 2, x.shape[-1]
  pad = [(0, 0)] * (x.ndim - 1) + [(h, h)]
  if edges == "zeros":
    padded = np.pad(x, pad)
    med = ndimage.median_filter(padded.reshape(-1), size=window, mode="constant", cval=0.0)
  else:
    padded = np.pad(x, pad, mode="symmetric")
    med = ndimage.median_filter(padded.reshape(-1), size=window, mode="reflect")
  return med.reshape(padded.shape)[..., h:h + n]


def median_baseline(x: np.ndarray, window: int) -> np.ndarray:
  """Running median along time (odd `window`), edges mirrored.

  Equals scipy.ndimage.median_filter(x, size=(1, ..., window)) (mode
  "reflect"); scipy.signal.medfilt zero-pads instead, which drags the baseline
  towards 0 within window/2 of each edge, so it agrees only in the interior.
  """
  x = np.asarray(x)
  if window // 2 >= x.shape[-1] and window % 2:
    # A window wider than the record (< 0.4 s of signal): rare, and the
    # repeated mirroring is ndimage's own, so let it do the whole thing.
    size = (1,) * (x.ndim - 1) + (window,)
    return ndimage.median_filter(x, size=size, mode="reflect")
  return _lead_wise_median(x, window, "symmetric")


def medfilt_baseline(x: np.ndarray, window: int) -> np.ndarray:
  """scipy.signal.medfilt(lead, window) of every lead: a running median whose window is
  zero-padded past the edges (ECGFounder's baseline)."""
  return _lead_wise_median(x, window, "zeros")


def remove_baseline(x: np.ndarray, fs: float, window_s: float = 0.4,
                    method: str = "reflect") -> np.ndarray:
  """Subtracts a running-median baseline of `window_s` seconds (ECGFounder: 0.4 s).

  The median over 0.4 s ignores the QRS complex (~0.1 s) and follows the slow baseline, so
  subtracting it removes wander the high-pass left. "reflect": mirrored edges (`median_baseline`);
  "medfilt": ECGFounder's scipy.signal.medfilt with zero-padded edges and its window rule.
  """
  if window_s <= 0:
    raise ValueError(f"baseline window must be > 0 s, got {window_s}")
  x = np.asarray(x)
  y = x.astype(np.float64, copy=False)
  window = median_window(fs, window_s, method)
  base = medfilt_baseline(y, window) if method == "medfilt" else median_baseline(y, window)
  y = y - base
  return y.astype(_float_like(x), copy=False)
