"""Built-in synthetic 12-lead ECG data set (`synthetic:N?seed=&fs=&seconds=`).

Each record comes from a rotating cardiac dipole (P, Q, R, S, T waves as Gaussian
bumps of a 3-D vector, body frame x = left, y = inferior, z = anterior) projected
onto lead vectors, plus electrode noise: baseline wander, white noise and
sometimes powerline. Limb leads are built like a real ECG machine builds them:
I and II from electrode potentials, then III, aVR, aVL, aVF derived from I and II
in float32, so Einthoven's and Goldberger's laws hold to rounding.

Record i depends only on (seed, i) (`np.random.default_rng([seed, i])`), so random
access is O(1) and independent of N. Patients own 2-3 consecutive records in
5 of every 6 records and share their morphology (axis, amplitudes, widths), so
patient-grouped splits and patient-level contrastive positives are testable.

Labels (multi-hot): NORM (none of the others), STE (ST elevation in an inferior,
anterior or lateral lead group, reciprocal depression opposite), WQRS (right or
left bundle-branch-like QRS > 120 ms), AF (irregularly irregular RR, no P wave,
4-8 Hz fibrillatory baseline), LVOLT (all limb-lead QRS < 0.5 mV).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs

LABEL_NAMES: tuple[str, ...] = ("NORM", "STE", "WQRS", "AF", "LVOLT")
_STE, _WQRS, _AF, _LVOLT = range(4)  # Positions in the condition vector.

# Beat window around each R peak, seconds: covers the P wave at the longest PR
# and the end of T at 40 bpm.
_WIN_START, _WIN_END = -0.34, 0.62
# Precordial electrode angles in the horizontal plane, degrees from +x (left)
# towards +z (anterior): V1 right of the sternum ... V6 mid-axillary.
_PRECORDIAL_DEG = np.array([115.0, 95.0, 70.0, 48.0, 25.0, 0.0])
# V4-V6 sit lower on the chest than the heart's electrical centre, so they see
# part of the inferior component too (keeps V5/V6 upright with vertical axes).
_PRECORDIAL_Y = np.array([0.05, 0.05, 0.15, 0.25, 0.3, 0.3])
# Patients in each block of 6 records: two records, three records, one record.
_PATIENT_IN_BLOCK = (0, 0, 1, 1, 1, 2)
# I, II and V1..V6 from the 9 electrode potentials (RA, LA, LL, V1..V6); the
# precordial leads are referred to Wilson's central terminal.
_ELECTRODE_TO_LEADS = np.zeros((8, 9))
_ELECTRODE_TO_LEADS[0, :2] = (-1.0, 1.0)
_ELECTRODE_TO_LEADS[1, [0, 2]] = (-1.0, 1.0)
_ELECTRODE_TO_LEADS[2:, :3] = -1.0 / 3.0
_ELECTRODE_TO_LEADS[2:, 3:] = np.eye(6)


def _unit(*v: float) -> np.ndarray:
  v = np.asarray(v, dtype=np.float64)
  return v / np.linalg.norm(v)


def _direction(frontal_deg: float, elevation_deg: float) -> np.ndarray:
  """Unit vector at a frontal angle (0 = lead I, 90 = aVF), tilted anterior."""
  a, b = np.deg2rad(frontal_deg), np.deg2rad(elevation_deg)
  return np.array([np.cos(a) * np.cos(b), np.sin(a) * np.cos(b), np.sin(b)])


# ST-elevation vectors of the three territories (reciprocal leads go negative).
_STE_TERRITORIES = (_unit(0.15, 1.0, 0.1), _unit(0.2, -0.1, 1.0),
                    _unit(1.0, -0.35, 0.35))


def patient_number(index: int) -> int:
  """Patient of record `index`: each block of 6 records holds 2 + 3 + 1."""
  return 3 * (index // 6) + _PATIENT_IN_BLOCK[index % 6]


def fold_of(index: int) -> int:
  """Fold of record `index` (1..10, round robin)."""
  return index % 10 + 1


def _draw_conditions(rng: np.random.Generator) -> np.ndarray:
  """Draws the condition flags first, so labels cost one rng and three numbers."""
  u, c1, c2 = rng.random(3)
  cond = np.zeros(4, dtype=bool)
  if u >= 0.40:  # 40% NORM.
    first = int(c1 * 4)
    cond[first] = True
    if u >= 0.92:  # 8% carry a second condition.
      cond[(first + 1 + int(c2 * 3)) % 4] = True
  return cond


def _labels(cond: np.ndarray) -> np.ndarray:
  return np.concatenate([[not cond.any()], cond]).astype(np.float32)


def _patient_params(seed: int, patient: int) -> dict[str, Any]:
  """Morphology shared by all records of a patient."""
  rng = np.random.default_rng([seed, patient, 7])
  return {
      "hr": 40.0 + 140.0 * rng.beta(2.2, 4.5),
      "axis": rng.uniform(-25.0, 85.0),
      "elev": rng.uniform(-25.0, -5.0),
      "amp": rng.uniform(0.75, 1.7),  # Frontal-plane R magnitude, mV.
      "prec_gain": rng.uniform(1.5, 2.4),
      "prec_deg": _PRECORDIAL_DEG + rng.normal(0.0, 4.0, 6),
      "q_rel": rng.uniform(0.08, 0.18),
      "s_rel": rng.uniform(0.25, 0.45),
      "r_sig": rng.uniform(0.009, 0.012),
      "qs_sig": rng.uniform(0.007, 0.010),
      "t_rel": rng.uniform(0.2, 0.35),
      "t_axis": rng.uniform(-20.0, 20.0),
      "t_elev": rng.uniform(-5.0, 20.0),
      "p_amp": rng.uniform(0.08, 0.2),
      "p_axis": rng.uniform(40.0, 70.0),
      "pr": rng.uniform(0.12, 0.20),
      "p_sig": rng.uniform(0.018, 0.026),
      "qt": rng.uniform(0.26, 0.30),
  }


def _beat_times(rng, hr, af, seconds):
  """R-peak times (s) and the RR interval preceding each beat."""
  mean_rr = 60.0 / hr
  k = int((seconds + 1.0) / (0.55 * mean_rr)) + 4
  if af:
    # Irregularly irregular: independent log-normal intervals.
    rr = mean_rr * np.exp(rng.normal(-0.02, 0.2, k))
  else:
    # Respiratory sinus arrhythmia plus a little beat-to-beat jitter.
    resp_f, phase = rng.uniform(0.15, 0.35), rng.uniform(0, 2 * np.pi)
    rsa = rng.uniform(0.01, 0.05)
    t_k = np.arange(k) * mean_rr
    rr = mean_rr * (1.0 + rsa * np.sin(2 * np.pi * resp_f * t_k + phase)
                    + rng.normal(0.0, 0.015, k))
  rr = np.clip(rr, 0.25, 2.0)
  times = np.cumsum(rr) - rng.uniform(0.0, 1.0) * rr[0] - 0.6
  keep = (times > _WIN_START - _WIN_END) & (times < seconds - _WIN_START)
  return times[keep], rr[keep]


def _cardiac_vcg(rng, p, cond, hr, fs, n, seconds):
  """Cardiac dipole (n, 3) in mV plus debug info."""
  af = bool(cond[_AF])
  times, rr = _beat_times(rng, hr, af, seconds)
  amp = p["amp"]
  if cond[_LVOLT]:
    # Rescale so the frontal R magnitude (which bounds limb-lead QRS) is small.
    gain = rng.uniform(0.18, 0.3) / amp
  else:
    gain = float(np.exp(rng.normal(0.0, 0.08)))
  axis = p["axis"] + rng.normal(0.0, 4.0)
  elev = p["elev"]
  bbb = None
  if cond[_WQRS]:
    bbb = "RBBB" if rng.random() < 0.5 else "LBBB"
    if bbb == "LBBB":
      elev -= 15.0  # More posterior: deep QS in V1.
  r_dir = _direction(axis, elev)
  a3 = amp / np.cos(np.deg2rad(elev))  # 3-D magnitude with this frontal size.
  t_vec = p["t_rel"] * a3 * _direction(axis + p["t_axis"], p["t_elev"])
  sq = np.sqrt(rr)
  w = [  # (mu, sigma, vector) per wave; mu/sigma scalars or per-beat arrays.
      (0.0, p["r_sig"], a3 * r_dir),
      (-0.022, p["qs_sig"], p["q_rel"] * a3 * _unit(-0.5, 0.2, 0.8)),
      (0.026, p["qs_sig"], p["s_rel"] * a3 * _unit(-0.3, -0.5, -0.55)),
  ]
  if not af:
    w.append((-p["pr"], p["p_sig"], p["p_amp"] * _direction(p["p_axis"], 10)))
  if bbb == "RBBB":
    w[2] = (0.035, 1.6 * p["qs_sig"], w[2][2])
    w.append((0.078, 0.02, rng.uniform(0.45, 0.7) * a3 * _unit(-0.55, 0.1, 0.85)))
  elif bbb == "LBBB":
    w[0] = (0.0, 2.4 * p["r_sig"], w[0][2])
    w[1] = (-0.022, p["qs_sig"], 0.0 * w[1][2])  # No septal q.
    w[2] = (0.026, p["qs_sig"], 0.2 * w[2][2])
    w.append((0.055, 0.02, rng.uniform(0.5, 0.8) * a3 * r_dir))
    t_vec = -0.8 * t_vec  # Discordant repolarisation.
  if cond[_STE]:
    territory = _STE_TERRITORIES[int(rng.integers(3))]
    # Final size in mV; divided by `gain` because every beat wave is scaled by
    # it below. Low voltage shrinks the elevation less than the QRS so that
    # it stays visible when both conditions are present.
    ste_mv = rng.uniform(0.25, 0.45) * max(gain, 0.6)
    w.append((0.09 * sq, 0.045 * sq, ste_mv / gain * territory))
  # Respiration modulates the QRS amplitude by a few percent.
  resp = 1.0 + rng.uniform(0.0, 0.06) * np.sin(
      2 * np.pi * rng.uniform(0.15, 0.35) * times + rng.uniform(0, 2 * np.pi))
  nb = len(times)
  mu = np.stack([np.broadcast_to(x[0], nb) for x in w], axis=1)
  sig = np.stack([np.broadcast_to(x[1], nb) for x in w], axis=1)
  vec = np.stack([np.broadcast_to(x[2], (nb, 3)) for x in w], axis=1)
  vec = vec * resp[:, None, None]

  offsets = np.arange(int(np.floor(_WIN_START * fs)), int(np.ceil(_WIN_END * fs)))
  r_pos = times * fs
  idx = np.floor(r_pos).astype(np.int64)[:, None] + offsets  # (nb, W)
  tau = (idx - r_pos[:, None]) / fs
  z = (tau[:, None, :] - mu[:, :, None]) / sig[:, :, None]
  beats = np.matmul(np.exp(-0.5 * z * z).transpose(0, 2, 1), vec)  # (nb, W, 3)
  # T: asymmetric (slow upstroke, faster downstroke), later at slower rates.
  dt = tau - (p["qt"] * sq)[:, None]
  t_sig = np.where(dt < 0, 0.06, 0.038) * sq[:, None]
  beats += np.exp(-0.5 * (dt / t_sig) ** 2)[:, :, None] * (
      t_vec * resp[:, None])[:, None, :]
  beats *= gain
  ok = (idx >= 0) & (idx < n)
  flat = idx[ok]
  vcg = np.stack(
      [np.bincount(flat, beats[..., d][ok], minlength=n) for d in range(3)], 1)
  if af:
    t = np.arange(n) / fs
    f0 = rng.uniform(4.5, 8.0)
    phase = 2 * np.pi * f0 * t + 2.0 * np.sin(
        2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 2 * np.pi))
    fib = rng.uniform(0.05, 0.1) * (np.sin(phase) + 0.4 * np.sin(2.1 * phase))
    vcg += fib[:, None] * _unit(-0.3, 0.5, 0.8) * max(gain, 0.7)
  ste = None
  if cond[_STE]:  # the ST-elevation wave alone (the last wave), for explanations' tests
    ste_beats = (np.exp(-0.5 * z[:, -1] ** 2)[:, :, None] * vec[:, -1][:, None, :]) * gain
    ste = np.stack([np.bincount(flat, ste_beats[..., d][ok], minlength=n) for d in range(3)],
                   1)
  in_record = (times >= 0) & (times < seconds)
  r_times = times[in_record]
  info = {
      "hr_bpm": 60.0 / float(np.mean(np.diff(r_times))) if len(r_times) > 1
                else hr,
      "r_peaks": np.round(r_times * fs).astype(np.int64),
      "bbb": bbb,
      "gain": gain,
      "ste_vcg": ste,
  }
  return vcg, info


def _lead_matrix(p: dict[str, Any]) -> np.ndarray:
  """(8, 3) projections for I, II, V1..V6."""
  deg = np.deg2rad(p["prec_deg"])
  prec = p["prec_gain"] * np.stack(
      [np.cos(deg), _PRECORDIAL_Y, np.sin(deg)], axis=1)
  return np.concatenate([[_direction(0, 0)], [_direction(60, 0)], prec])


def _electrode_noise(rng, fs, n):
  """(9, n) electrode potentials: correlated wander, white noise, maybe powerline."""
  t = np.arange(n) / fs
  freqs = rng.uniform(0.05, 0.5, (3, 1))
  wander = np.sin(2 * np.pi * freqs * t + rng.uniform(0, 2 * np.pi, (3, 1)))
  level = rng.uniform(0.02, 0.3)
  noise = (level * rng.uniform(-1.0, 1.0, (9, 3))) @ wander
  noise += rng.standard_normal((9, n)) * rng.uniform(0.004, 0.025)
  mains = 50.0 if rng.random() < 0.5 else 60.0
  if rng.random() < 0.3 and fs > 2.2 * mains:
    hum = np.sin(2 * np.pi * mains * t + rng.uniform(0, 2 * np.pi))
    noise += rng.uniform(0.0, 0.03, (9, 1)) * hum
  return noise


def _to_12_leads(eight: np.ndarray) -> np.ndarray:
  """Float32 (12, n) from I, II, V1..V6; III, aVR, aVL, aVF derived in float32."""
  eight = eight.astype(np.float32)
  i, ii = eight[0], eight[1]
  out = np.empty((12, eight.shape[1]), np.float32)
  out[0], out[1] = i, ii
  out[2] = ii - i
  out[3] = -(i + ii) / np.float32(2)
  out[4] = i - ii / np.float32(2)
  out[5] = ii - i / np.float32(2)
  out[6:] = eight[2:]
  return out


def generate_record(
    seed: int, index: int, fs: float = 250.0, seconds: float = 10.0,
    debug: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
  """Returns (signal float32 (12, n) in mV, labels float32 (5,), info) for record `index`.

  info holds hr_bpm, r_peaks (sample indices), conditions, bbb, and with
  debug=True also `clean`: the noise-free 12-lead signal, and `ste`: the ST-elevation wave
  alone on the 12 leads (positive where the generator elevated the ST segment, negative in
  the reciprocal leads; None without STE).
  """
  rng = np.random.default_rng([seed, index])
  cond = _draw_conditions(rng)
  p = _patient_params(seed, patient_number(index))
  hr = p["hr"] * np.exp(rng.normal(0.0, 0.08))
  if cond[_AF]:
    hr *= rng.uniform(1.0, 1.3)
  hr = float(np.clip(hr, 40.0, 180.0))
  n = int(round(seconds * fs))
  vcg, info = _cardiac_vcg(rng, p, cond, hr, fs, n, seconds)
  cardiac = _lead_matrix(p) @ vcg.T  # (8, n)
  noisy = cardiac + _ELECTRODE_TO_LEADS @ _electrode_noise(rng, fs, n)
  labels = _labels(cond)
  info["conditions"] = tuple(
      name for name, on in zip(LABEL_NAMES, labels) if on)
  ste_vcg = info.pop("ste_vcg")
  if debug:
    info["clean"] = _to_12_leads(cardiac)
    info["ste"] = None if ste_vcg is None else _to_12_leads(_lead_matrix(p) @ ste_vcg.T)
  return _to_12_leads(noisy), labels, info


class SyntheticSource(sources.Source):
  """N synthetic 12-lead records (see the module docstring)."""

  label_names = LABEL_NAMES
  leads = leads_lib.LEADS_12

  def __init__(self, n: int, seed: int = 0, fs: float = 250.0,
               seconds: float = 10.0, spec: specs.DataSpec | None = None):
    self.n, self.seed = int(n), int(seed)
    self.fs, self.seconds = float(fs), float(seconds)
    self.spec = spec or specs.DataSpec(
        "synthetic", str(n), {"seed": str(seed), "fs": str(fs),
                              "seconds": str(seconds)})
    self._meta: dict[str, np.ndarray] | None = None

  def __len__(self) -> int:
    return self.n

  def record_id(self, index: int) -> str:
    """Record id of `index`."""
    return f"syn-{self.seed}-{index:06d}"

  def patient_id(self, index: int) -> str:
    """Patient id of `index` (shared by 1-3 consecutive records)."""
    return f"syn-{self.seed}-p{patient_number(index):06d}"

  def __getitem__(self, index: int) -> sources.Record:
    index = self._check_index(index)
    signal, labels, _ = generate_record(self.seed, index, self.fs, self.seconds)
    return sources.make_record(
        signal, self.fs, self.leads, self.record_id(index),
        self.patient_id(index), labels, fold_of(index))

  def metadata(self) -> dict[str, np.ndarray]:
    if self._meta is None:
      idx = range(self.n)
      labels = np.stack(
          [_labels(_draw_conditions(np.random.default_rng([self.seed, i])))
           for i in idx]) if self.n else np.zeros((0, len(LABEL_NAMES)), np.float32)
      self._meta = {
          "record_id": np.array([self.record_id(i) for i in idx], dtype=str),
          "patient_id": np.array([self.patient_id(i) for i in idx], dtype=str),
          "fold": np.array([fold_of(i) for i in idx], dtype=np.int64),
          "labels": labels,
      }
    return {k: v.copy() for k, v in self._meta.items()}


def _record_count(text: str) -> int:
  try:
    return specs.nonnegative_int(text)
  except ValueError:
    raise ValueError(
        f"synthetic:N needs a record count N, got {text!r} "
        "(e.g. synthetic:2000?seed=1)") from None


@specs.register_format(
    "synthetic",
    options={
        "seed": specs.Option(specs.nonnegative_int, 0, "generator seed"),
        "fs": specs.Option(specs.positive_float, 250.0, "sampling rate, Hz"),
        "seconds": specs.Option(specs.positive_float, 10.0, "record length, s"),
    },
    help="built-in synthetic 12-lead ECGs with 5 labels", reads_path=False)
def _open_synthetic(spec: specs.DataSpec, *, seed: int, fs: float,
                    seconds: float) -> sources.Source:
  return SyntheticSource(_record_count(spec.path), seed, fs, seconds, spec)
