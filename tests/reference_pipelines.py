"""The official preprocessing pipelines as SPEC section 10 writes them, in plain scipy calls.

These are the yardsticks the presets are tested against: each function is the reference's own
sequence of scipy/NumPy calls on one raw record (leads, samples), float64 throughout, with no
ecgjax code. Kept apart from the tests so the benchmark and the tests measure the same thing.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps
from scipy.interpolate import interp1d


def ecg_fm_segments(x: np.ndarray, fs: float) -> np.ndarray:
  """fairseq-signals: linear resampling to 500 Hz on its grid, per-lead z-score of the whole
  record ('zero' constant-lead strategy), every non-overlapping 5 s segment (k, leads, 2500)."""
  x = np.asarray(x, np.float64)
  n = x.shape[-1]
  if fs != 500:
    m = int(n * 500 / fs)
    x = interp1d(np.linspace(0, m - 1, n), x, kind="linear", axis=-1)(np.arange(m))
  mean, std = x.mean(-1, keepdims=True), x.std(-1, keepdims=True)
  x = np.where(std == 0, 0.0, (x - mean) / np.where(std == 0, 1.0, std))
  seg = 2500
  k = x.shape[-1] // seg
  return np.stack([x[:, i * seg:(i + 1) * seg] for i in range(k)]) if k else np.zeros(
      (0, x.shape[0], seg))


def embs_pool(h: np.ndarray) -> np.ndarray:
  """ECG-FM scripts/embs.py: (time, dim) encoder output -> x.sum(time) / (x != 0).sum(time)."""
  return h.sum(0) / (h != 0).sum(0)


def ecgfounder_input(x: np.ndarray, fs: float) -> np.ndarray:
  """ECGFounder: the first 10 s; resample_unequal to 500 Hz (both endpoints spanned); per lead
  filtfilt(iirnotch(50, 30)), ONE butter(4, [0.67, 40], 'bandpass') b/a filtfilt, minus
  medfilt(x, int(0.4 * 500) + 1); z-score over (leads, samples) with std + 1e-8."""
  x = np.asarray(x, np.float64)[:, :int(round(10 * fs))]
  n = x.shape[-1]
  if fs != 500:
    t = n / fs
    m = int(round(n * 500 / fs))
    x = interp1d(np.linspace(0, t, n), x, kind="linear", axis=-1)(np.linspace(0, t, m))
  fs = 500
  b, a = sps.iirnotch(50, 30, fs)
  x = np.stack([sps.filtfilt(b, a, lead) for lead in x])
  b, a = sps.butter(N=4, Wn=[0.67, 40], btype="bandpass", fs=fs)
  x = np.stack([sps.filtfilt(b, a, lead) for lead in x])
  k = int(0.4 * fs) + 1
  k = k if k % 2 else k + 1
  x = x - np.stack([sps.medfilt(lead, kernel_size=k) for lead in x])
  return (x - x.mean()) / (x.std() + 1e-8)


def st_mem_crops(x: np.ndarray, fs: float, n_crops: int = 3) -> np.ndarray:
  """ST-MEM: FFT resampling to 250 Hz, order-5 Butterworth high-pass 0.67 Hz then low-pass
  40 Hz (sosfiltfilt), crops of 2250 at evenly spaced starts, each z-scored as one array."""
  x = np.asarray(x, np.float64)
  n = x.shape[-1]
  if fs != 250:
    x = sps.resample(x, int(round(n * 250 / fs)), axis=-1)
  for kind, cut in (("highpass", 0.67), ("lowpass", 40.0)):
    x = sps.sosfiltfilt(sps.butter(5, cut, kind, fs=250, output="sos"), x, axis=-1)
  slack = max(x.shape[-1] - 2250, 0)
  starts = np.round(np.linspace(0, slack, n_crops)).astype(int) if n_crops > 1 else [0]
  crops = []
  for s in starts:
    c = x[:, s:s + 2250]
    std = c.std()
    crops.append((c - c.mean()) / std if std > 0 else np.zeros_like(c))
  return np.stack(crops)
