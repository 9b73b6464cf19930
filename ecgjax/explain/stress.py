"""A stress set for R-peak detectors: long synthetic records whose every beat the generator knows.

`stress_record(seed, seconds=1800, fs=360)` draws a Holter-like record from the same rotating
cardiac dipole as the built-in synthetic data set (its patient morphology and lead projections),
and adds what makes beat detection hard in real recordings:

- heart rate drifting between about 45 and 150 bpm over minutes, with respiratory sinus
  arrhythmia;
- premature ventricular beats (`pvc_rate` of the beats): early (coupling 55-75% of the RR, at
  least 0.3 s),
  wide (QRS about 150 ms), large, in their own direction (so upright in some leads and inverted
  in others), with a discordant T wave and a compensatory pause;
- baseline wander (`wander_mv`: respiration plus slow electrode drift, and electrode-motion
  steps), muscle-like noise (`emg_mv` RMS: 5-100 Hz noise in bursts of a few seconds at up to
  three times that level) and mains hum;
- one lead or twelve (`lead="II"`, `"aVR"` for an inverted QRS, `"V1"` for a mostly negative
  one; None for all twelve), or every lead's polarity reversed (`invert=True`).

The truth is the R peak of every beat that lies inside the record (`StressRecord.r_peaks`) and
its kind (`"N"` or `"V"`). `bench/rpeak_stress.py` scores `detect_r_peaks` on a grid of these.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import signal as sps

from ecgjax import leads as leads_lib
from ecgjax.data.formats import synthetic

_WIN = (-0.34, 0.7)  # seconds around each beat's R that its waves can reach


class StressRecord(NamedTuple):
  """A stress record and its truth."""
  signal: np.ndarray  # (leads, samples) float32, mV
  fs: float
  leads: tuple[str, ...]
  r_peaks: np.ndarray  # int64 sample index of every beat in the record
  kinds: np.ndarray  # "N" (sinus) or "V" (premature ventricular), one per r_peak


def _beat_schedule(rng: np.random.Generator, seconds: float, pvc_rate: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Beat times (s), kinds, and each beat's underlying sinus RR (s)."""
  base = rng.uniform(60.0, 85.0)
  drift = [(rng.uniform(10.0, 30.0), rng.uniform(120.0, 900.0), rng.uniform(0, 2 * np.pi))
           for _ in range(3)]
  rsa_f, rsa_a = rng.uniform(0.15, 0.35), rng.uniform(0.01, 0.05)
  times, kinds, rrs = [], [], []
  t, last_v = rng.uniform(0.0, 0.5), False
  while t < seconds - _WIN[0]:
    hr = base + sum(a * np.sin(2 * np.pi * t / period + ph) for a, period, ph in drift)
    rr = 60.0 / float(np.clip(hr, 45.0, 150.0))
    rr *= 1.0 + rsa_a * np.sin(2 * np.pi * rsa_f * t) + rng.normal(0.0, 0.01)
    if not last_v and rng.random() < pvc_rate:
      # Coupling 55-75% of the RR, but not under 0.3 s: R-on-T beats earlier than that are
      # rare, and a detector's 200 ms refractory period would merge them with their sinus beat.
      times.append(t + min(max(rng.uniform(0.55, 0.75) * rr, 0.3), 0.85 * rr))
      kinds.append("V")
      rrs.append(rr)
      t += 2.0 * rr  # compensatory pause: the next sinus beat keeps the sinus rhythm
      last_v = True
    else:
      t += rr
      last_v = False
    times.append(t)
    kinds.append("N")
    rrs.append(rr)
  return np.asarray(times), np.asarray(kinds), np.asarray(rrs)


def _dipole(rng: np.random.Generator, p: dict, times: np.ndarray, kinds: np.ndarray,
            rrs: np.ndarray, v_dir: np.ndarray, fs: float, n: int) -> np.ndarray:
  """(n, 3) cardiac dipole, mV: the synthetic set's sinus beat, and wide ectopic beats."""
  amp = p["amp"] / np.cos(np.deg2rad(p["elev"]))
  r_dir = synthetic._direction(p["axis"], p["elev"])  # pylint: disable=protected-access
  unit = synthetic._unit  # pylint: disable=protected-access
  t_vec = p["t_rel"] * amp * synthetic._direction(  # pylint: disable=protected-access
      p["axis"] + p["t_axis"], p["t_elev"])
  sq = np.sqrt(rrs)
  v = kinds == "V"
  # Waves (centre s, width s, vector) of each beat: rows are waves, arrays over beats.
  zero = np.zeros(3)
  waves = [
      (np.zeros_like(sq), np.where(v, 0.028, p["r_sig"]),
       np.where(v[:, None], 1.6 * amp * v_dir, amp * r_dir)),
      (np.full_like(sq, -0.022), np.full_like(sq, p["qs_sig"]),
       np.where(v[:, None], zero, p["q_rel"] * amp * unit(-0.5, 0.2, 0.8))),
      (np.where(v, 0.06, 0.026), np.where(v, 0.03, p["qs_sig"]),
       np.where(v[:, None], -0.5 * amp * v_dir, p["s_rel"] * amp * unit(-0.3, -0.5, -0.55))),
      (np.full_like(sq, -p["pr"]), np.full_like(sq, p["p_sig"]),
       np.where(v[:, None], zero, p["p_amp"] * synthetic._direction(p["p_axis"], 10))),  # pylint: disable=protected-access
  ]
  mu = np.stack([w[0] for w in waves], 1)
  sig = np.stack([w[1] for w in waves], 1)
  vec = np.stack([w[2] for w in waves], 1)  # (beats, waves, 3)
  offsets = np.arange(int(np.floor(_WIN[0] * fs)), int(np.ceil(_WIN[1] * fs)))
  r_pos = times * fs
  idx = np.floor(r_pos).astype(np.int64)[:, None] + offsets  # (beats, W)
  tau = (idx - r_pos[:, None]) / fs
  out = np.zeros((n, 3))
  for lo in range(0, len(times), 512):  # chunks of beats keep the (beats, waves, W) temporaries small
    s = slice(lo, lo + 512)
    z = (tau[s, None, :] - mu[s, :, None]) / sig[s, :, None]
    beats = np.matmul(np.exp(-0.5 * z * z).transpose(0, 2, 1), vec[s])  # (b, W, 3)
    # T: later at slower rates; an ectopic beat's is broad and opposite its QRS.
    dt = tau[s] - np.where(v[s], 0.32, p["qt"] * sq[s])[:, None]
    width = np.where(v[s, None], 0.07, np.where(dt < 0, 0.06, 0.038) * sq[s, None])
    t_vecs = np.where(v[s, None], -0.45 * amp * v_dir, t_vec)  # (b, 3)
    beats += np.exp(-0.5 * (dt / width) ** 2)[:, :, None] * t_vecs[:, None, :]
    ok = (idx[s] >= 0) & (idx[s] < n)
    for d in range(3):
      out[:, d] += np.bincount(idx[s][ok], beats[..., d][ok], minlength=n)
  return out


def _noise(rng: np.random.Generator, fs: float, n: int, wander_mv: float, emg_mv: float
           ) -> np.ndarray:
  """(9, n) electrode potentials: wander, electrode-motion steps, bursts of EMG, hum."""
  t = np.arange(n) / fs
  out = np.zeros((9, n))
  if wander_mv > 0:
    freqs = np.concatenate([rng.uniform(0.15, 0.35, (1, 1)), rng.uniform(0.02, 0.12, (2, 1))])
    slow = np.sin(2 * np.pi * freqs * t + rng.uniform(0, 2 * np.pi, (3, 1)))
    out += (wander_mv * rng.uniform(-1.0, 1.0, (9, 3))) @ slow
    # Electrode motion: a few steps a minute that relax over a second or two.
    n_steps = int(rng.poisson(n / fs / 30.0))
    for at in rng.integers(0, n, n_steps):
      k = np.arange(n - at) / fs
      # A shift over ~0.15 s (an electrode settling, not an instant jump), then a slow return.
      rise = 0.5 - 0.5 * np.cos(np.pi * np.minimum(k / 0.15, 1.0))
      tail = rise * np.exp(-k / rng.uniform(0.5, 2.0))
      out[rng.integers(9), at:] += rng.normal(0.0, wander_mv) * tail
  if emg_mv > 0:
    sos = sps.butter(4, [5.0, min(100.0, 0.45 * fs)], btype="bandpass", fs=fs, output="sos")
    emg = sps.sosfilt(sos, rng.standard_normal((9, n)), axis=-1)
    emg /= emg.std(axis=-1, keepdims=True)
    # Bursts: a smooth envelope between 0.3x and 3x the level, changing over seconds.
    knots = rng.uniform(0.3, 3.0, (9, int(n / fs / 4.0) + 2)) ** 1.5 / 2.0
    env = np.stack([np.interp(t, np.linspace(0, t[-1] if n > 1 else 1, k.size), k)
                    for k in knots])
    out += emg_mv * env * emg
  mains = 50.0 if rng.random() < 0.5 else 60.0
  if fs > 2.2 * mains:
    out += rng.uniform(0.0, 0.02, (9, 1)) * np.sin(2 * np.pi * mains * t + rng.uniform(0, 6))
  return out


def stress_record(seed: int, *, seconds: float = 1800.0, fs: float = 360.0,
                  lead: str | None = None, pvc_rate: float = 0.08, wander_mv: float = 0.3,
                  emg_mv: float = 0.03, invert: bool = False) -> StressRecord:
  """One stress record (module docstring); depends only on its arguments."""
  if lead is not None and lead not in leads_lib.LEADS_12:
    raise ValueError(f"lead must be one of {', '.join(leads_lib.LEADS_12)} or None, "
                     f"got {lead!r}")
  rng = np.random.default_rng([seed, 1800])
  p = synthetic._patient_params(seed, 0)  # pylint: disable=protected-access
  n = int(round(seconds * fs))
  times, kinds, rrs = _beat_schedule(rng, seconds, pvc_rate)
  projection = synthetic._lead_matrix(p)  # pylint: disable=protected-access
  # The ectopic focus: a direction its beats show in the record's lead (or leads), at least half
  # their size, as a Holter lead shows the PVCs a cardiologist counts.
  lead_vectors = synthetic._to_12_leads(projection).astype(np.float64)  # pylint: disable=protected-access
  if lead is not None:
    lead_vectors = lead_vectors[leads_lib.LEADS_12.index(lead)][None]
  unit_leads = lead_vectors / np.linalg.norm(lead_vectors, axis=1, keepdims=True)
  while True:
    v_dir = synthetic._direction(rng.uniform(-180.0, 180.0), rng.uniform(-40.0, 30.0))  # pylint: disable=protected-access
    if np.abs(unit_leads @ v_dir).max() >= 0.5:
      break
  cardiac = projection @ _dipole(rng, p, times, kinds, rrs, v_dir, fs, n).T
  noise = synthetic._ELECTRODE_TO_LEADS @ _noise(rng, fs, n, wander_mv, emg_mv)  # pylint: disable=protected-access
  x = synthetic._to_12_leads(cardiac + noise)  # pylint: disable=protected-access
  names = leads_lib.LEADS_12
  if lead is not None:
    k = names.index(lead)
    x, names = x[k:k + 1], (lead,)
  if invert:
    x = -x
  r = np.round(times * fs).astype(np.int64)
  inside = (r >= 0) & (r < n)
  return StressRecord(x.astype(np.float32), float(fs), tuple(names), r[inside], kinds[inside])
