"""Signal augmentations (NumPy, explicit rng) for SSL views and fine-tuning.

Every op takes a float32 (leads, n) record and a np.random.Generator and
returns a NEW float32 array: the input is never modified, because the same
prepared signal may feed several views. The single ops take amplitudes in the
input's units. The recipes (`ScheduledAugment`, `StMemRandAugment`) measure
theirs in standard deviations of the record by default, so they mean the same
whether they run before `Preprocessing.finish` (mV, where the pipeline runs
them) or after it (standardised units, where the papers state them).
Everything is a module-level function or a small class of plain fields, so it
pickles into grain worker processes, and all randomness comes from `rng`, so
a seed reproduces a view exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
import math
from typing import Any, Protocol, TypeVar

import numpy as np

from ecgjax import errors, registry

from ecgjax.data.transforms import crop_or_pad


class Augmenter(Protocol):
  """A random per-record transform: (x float32 (leads, n), rng) -> x."""

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ...


def _f32(x: np.ndarray) -> np.ndarray:
  return np.asarray(x, dtype=np.float32)


def _check_fraction(name: str, value: float) -> None:
  if not 0 <= value <= 1:
    raise ValueError(f"{name} must be in [0, 1], got {value}")


def _window_start(n: int, length: int, rng: np.random.Generator) -> int:
  return int(rng.integers(0, n - length + 1))


def _shift_by(x: np.ndarray, k: int) -> np.ndarray:
  """x delayed by k samples (advanced when k < 0), zeros where nothing is known."""
  out = np.zeros_like(x)
  if k > 0:
    out[..., k:] = x[..., :-k]
  elif k < 0:
    out[..., :k] = x[..., -k:]
  else:
    out[...] = x
  return out


def random_lead_mask(x: np.ndarray, p: float, rng: np.random.Generator,
                     present: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
  """Zeroes each lead independently with probability p (ECG-FM's RLM: 0.5) -> (x, kept).

  `kept` is float32 (leads,), 1 for a kept lead. At least one lead is always
  kept, so a view is never all zeros: when every lead would be dropped, one
  chosen uniformly survives. With `present` (the record's lead mask), that
  survivor is a lead the record really has. The guarantee lowers a lead's drop
  rate by p**leads / leads (2e-5 for 12 leads at p = 0.5).
  """
  _check_fraction("lead drop probability", p)
  x = _f32(x)
  n_leads = x.shape[-2]
  keep = rng.random(n_leads) >= p
  have = (np.ones(n_leads, bool) if present is None
          else np.asarray(present).reshape(n_leads) > 0)
  if not (keep & have).any():
    pool = np.flatnonzero(have) if have.any() else np.arange(n_leads)
    keep[int(pool[rng.integers(len(pool))])] = True
  kept = keep.astype(np.float32)
  return x * kept[:, None], kept


def two_segment_views(x: np.ndarray, seg_len: int,
                      rng: np.random.Generator | None = None) -> np.ndarray:
  """Two ADJACENT windows (2, leads, seg_len) of one record (CMSC's positive pair).

  seg0 = x[:, s:s+n], seg1 = x[:, s+n:s+2n]; s is uniform over the record
  when it is longer than 2n and rng is given, else 0. A record shorter than
  2n is zero-padded on the right, as `crop_or_pad` does (seg1 then holds
  padding: filter such records upstream when that matters).
  """
  if seg_len < 1:
    raise ValueError(f"seg_len must be >= 1, got {seg_len}")
  x = _f32(x)
  slack = x.shape[-1] - 2 * seg_len
  start = int(rng.integers(0, slack + 1)) if rng is not None and slack > 0 else 0
  pair = crop_or_pad(x, 2 * seg_len, start)
  # (leads, 2n) -> (leads, 2, n) -> (2, leads, n).
  return np.ascontiguousarray(
      np.moveaxis(pair.reshape(x.shape[:-1] + (2, seg_len)), -2, 0))


def roll(x: np.ndarray, max_fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Circular time shift by k ~ U{-m..m} samples, m = floor(max_fraction * n)."""
  _check_fraction("max_fraction", max_fraction)
  x = _f32(x)
  m = int(max_fraction * x.shape[-1])
  return np.roll(x, int(rng.integers(-m, m + 1)), axis=-1)


def shift(x: np.ndarray, max_fraction: float, rng: np.random.Generator) -> np.ndarray:
  """Time shift by k ~ U{-m..m} samples, m = floor(max_fraction * n), zero fill."""
  _check_fraction("max_fraction", max_fraction)
  x = _f32(x)
  m = int(max_fraction * x.shape[-1])
  return _shift_by(x, int(rng.integers(-m, m + 1)))


def amplitude_scale(x: np.ndarray, low: float, high: float,
                    rng: np.random.Generator) -> np.ndarray:
  """Multiplies the record by one factor ~ U(low, high).

  One factor for all leads: a gain change, keeping relations such as
  III = II - I that per-lead factors would break.
  """
  if not 0 <= low <= high:
    raise ValueError(f"need 0 <= low <= high, got {low}, {high}")
  return _f32(x) * np.float32(rng.uniform(low, high))


def gaussian_noise(x: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
  """Adds i.i.d. N(0, std^2) noise to every sample of every lead."""
  if std < 0:
    raise ValueError(f"noise std must be >= 0, got {std}")
  x = _f32(x)
  return x + np.float32(std) * rng.standard_normal(x.shape, dtype=np.float32)


def _occluded_length(n: int, min_fraction: float, max_fraction: float,
                     rng: np.random.Generator) -> int:
  _check_fraction("min_fraction", min_fraction)
  _check_fraction("max_fraction", max_fraction)
  if min_fraction > max_fraction:
    raise ValueError(f"min_fraction {min_fraction} > max_fraction {max_fraction}")
  # The epsilon keeps 0.02 * 2500 (= 50.000000000000007 in floats) at 50.
  lo = min(n, math.ceil(min_fraction * n - 1e-9))
  hi = max(lo, min(n, math.floor(max_fraction * n + 1e-9)))
  return int(rng.integers(lo, hi + 1))


def occlusion(x: np.ndarray, min_fraction: float, max_fraction: float,
              rng: np.random.Generator) -> np.ndarray:
  """Zeroes one contiguous segment of U{min..max} fraction of the length on all leads."""
  x = _f32(x)
  n = x.shape[-1]
  length = _occluded_length(n, min_fraction, max_fraction, rng)
  start = _window_start(n, length, rng)
  out = x.copy()
  out[..., start:start + length] = 0.0
  return out


def baseline_wander(x: np.ndarray, fs: float, amplitude: float,
                    rng: np.random.Generator, n_components: int = 2,
                    freq_range: tuple[float, float] = (0.05, 0.5)) -> np.ndarray:
  """Adds `n_components` slow sinusoids, f ~ U(freq_range) Hz (respiration, motion).

  The frequencies are shared by all leads (one breathing rate moves every
  electrode); each lead gets its own amplitude ~ U(0, amplitude) and phase
  per component.
  """
  if amplitude < 0 or fs <= 0:
    raise ValueError(f"need amplitude >= 0 and fs > 0, got {amplitude}, {fs}")
  x = _f32(x)
  shape = x.shape[:-1] + (n_components, 1)
  freqs = rng.uniform(*freq_range, size=(n_components, 1))
  amps = rng.uniform(0.0, amplitude, size=shape)
  phases = rng.uniform(0.0, 2 * np.pi, size=shape)
  t = np.arange(x.shape[-1]) / fs
  wander = (amps * np.sin(2 * np.pi * freqs * t + phases)).sum(axis=-2)
  return x + wander.astype(np.float32)


def record_std(x: np.ndarray) -> float:
  """The record's population std over all leads (what a global z-score divides by)."""
  return float(np.asarray(x).std(dtype=np.float64))


def alpha(epoch: float, total_epochs: float) -> float:
  """Augmentation strength 0.5 + 0.5 cos(pi e / E): 1 at the start, 0 at the end.

  Epochs past `total_epochs` stay at 0 rather than rising again.
  """
  if total_epochs <= 0:
    raise ValueError(f"total_epochs must be > 0, got {total_epochs}")
  e = min(max(float(epoch), 0.0), float(total_epochs))
  return 0.5 + 0.5 * math.cos(math.pi * e / total_epochs)


_T = TypeVar("_T")


def _to_dict(obj: Any) -> dict[str, Any]:
  d = dataclasses.asdict(obj)
  return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _from_dict(cls: type[_T], d: Mapping[str, Any]) -> _T:
  errors.check_keys(cls.__name__, d, (f.name for f in dataclasses.fields(cls)))
  return cls(**d)


def _pair(name: str, value: Sequence[float]) -> tuple[float, float]:
  pair = tuple(float(v) for v in value)
  if len(pair) != 2 or not 0 <= pair[0] <= pair[1]:
    raise ValueError(f"{name} must be (low, high) with 0 <= low <= high, got {value}")
  return pair


@dataclasses.dataclass(frozen=True)
class ScheduledAugment:
  """AnyECG-CCTA's online augmentation, its strength following alpha(epoch).

  Ops, in this order, each applied with probability p = alpha * base_p
  (base_p 1.0: at full strength every op fires; the SPEC says only
  "proportional to alpha"):
    roll by up to +-roll_fraction of the length (circular);
    amplitude scale ~ U(scale_range), one factor per record;
    Gaussian noise of std alpha * noise_std (0.05 at full strength: faint
      next to a QRS of ~3-5), in standard deviations of the record (the
      input's own units when relative=False);
    zero one contiguous segment of occlusion_range of the length, all leads
      (last, so the gap stays flat like a lead-off, not noise-filled).
  At alpha = 0 it is the identity. `__call__(x, rng)` without alpha is full
  strength; `at_epoch(e, E)` binds the schedule into a plain Augmenter.
  """

  roll_fraction: float = 0.1
  scale_range: tuple[float, float] = (0.9, 1.1)
  noise_std: float = 0.05
  occlusion_range: tuple[float, float] = (0.02, 0.10)
  base_p: float = 1.0
  relative: bool = True  # noise_std in record stds (True) or input units.

  def __post_init__(self):
    set_ = functools.partial(object.__setattr__, self)
    set_("scale_range", _pair("scale_range", self.scale_range))
    set_("occlusion_range", _pair("occlusion_range", self.occlusion_range))
    _check_fraction("roll_fraction", self.roll_fraction)
    _check_fraction("occlusion_range[1]", self.occlusion_range[1])
    _check_fraction("base_p", self.base_p)
    if self.noise_std < 0:
      raise ValueError(f"noise_std must be >= 0, got {self.noise_std}")

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict (for configs and exports)."""
    return _to_dict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> ScheduledAugment:
    """Inverse of to_dict; unknown keys are an error."""
    return _from_dict(cls, d)

  def __call__(self, x: np.ndarray, rng: np.random.Generator,
               alpha: float = 1.0) -> np.ndarray:
    """The augmented record at strength alpha in [0, 1]."""
    _check_fraction("alpha", alpha)
    x = _f32(x)
    p = alpha * self.base_p
    if p <= 0:
      return x.copy()
    fire = rng.random(4) < p  # Always four draws: the stream stays aligned.
    if fire[0]:
      x = roll(x, self.roll_fraction, rng)
    if fire[1]:
      x = amplitude_scale(x, *self.scale_range, rng)
    if fire[2]:
      unit = record_std(x) if self.relative else 1.0
      x = gaussian_noise(x, alpha * self.noise_std * unit, rng)
    if fire[3]:
      x = occlusion(x, *self.occlusion_range, rng)
    return x

  def at(self, strength: float) -> Augmenter:
    """This augmentation fixed at one strength, as an (x, rng) -> x Augmenter."""
    _check_fraction("alpha", strength)
    return _AtStrength(self, float(strength))

  def at_epoch(self, epoch: float, total_epochs: float) -> Augmenter:
    """This augmentation at alpha(epoch, total_epochs)."""
    return self.at(alpha(epoch, total_epochs))


@dataclasses.dataclass(frozen=True)
class _AtStrength:
  augment: ScheduledAugment
  strength: float

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return self.augment(x, rng, self.strength)


ST_MEM_OPS: tuple[str, ...] = (
    "shift", "cutout", "lead_drop", "flip", "erase", "sine", "partial_sine",
    "partial_white_noise")


@dataclasses.dataclass(frozen=True)
class StMemRandAugment:
  """ST-MEM's fine-tune RandAugment: `num_ops` distinct ops, each fired w.p. `prob`.

  Magnitudes scale with level / 10: at level 10 the ratio r = max_ratio (0.3)
  and the amplitude a = max_amplitude (0.3 standard deviations of the record,
  measured before the ops; input units when relative=False). The SPEC
  names the ops only; their meaning here (n = record length):
    shift: time shift by k ~ U{-rn..rn} samples, zero fill (not circular).
    cutout: one window of rn samples zeroed on ALL leads at the same place.
    lead_drop: each lead zeroed with probability r (at least one kept).
    flip: amplitude inversion x -> -x, as with reversed electrode polarity,
      a real recording error. flip_axis="time" reverses time instead; we do
      not default to it because a reversed ECG puts the T wave before the
      QRS, which no heart produces.
    erase: a window of rn samples zeroed in EACH lead at its own position.
    sine: a sin(2 pi f t + phi) added to all leads, f ~ U(sine_freq) Hz
      (default 0.1-40 Hz: from wander to the top of ST-MEM's pass band).
    partial_sine: that sinusoid on one window of rn samples only.
    partial_white_noise: N(0, a^2) noise on one window of rn samples, all leads.
  """

  fs: float = 250.0
  num_ops: int = 2
  prob: float = 0.5
  level: float = 10.0
  max_ratio: float = 0.3
  max_amplitude: float = 0.3
  sine_freq: tuple[float, float] = (0.1, 40.0)
  flip_axis: str = "amplitude"  # "amplitude" (x -> -x) | "time".
  ops: tuple[str, ...] = ST_MEM_OPS
  relative: bool = True  # max_amplitude in record stds (True) or input units.

  def __post_init__(self):
    set_ = functools.partial(object.__setattr__, self)
    set_("ops", tuple(self.ops))
    set_("sine_freq", _pair("sine_freq", self.sine_freq))
    unknown = sorted(set(self.ops) - set(ST_MEM_OPS))
    if unknown or len(set(self.ops)) != len(self.ops):
      raise ValueError(f"ops must be distinct names from {ST_MEM_OPS}, got {self.ops}")
    if not 0 <= self.num_ops <= len(self.ops):
      raise ValueError(f"num_ops must be in [0, {len(self.ops)}], got {self.num_ops}")
    if not 0 <= self.level <= 10:
      raise ValueError(f"level must be in [0, 10], got {self.level}")
    _check_fraction("prob", self.prob)
    _check_fraction("max_ratio", self.max_ratio)
    if self.flip_axis not in ("amplitude", "time"):
      raise ValueError(f"flip_axis must be 'amplitude' or 'time', got {self.flip_axis!r}")
    if not self.sine_freq[1] < self.fs / 2:
      raise ValueError(f"sine_freq {self.sine_freq} must stay below fs/2 = {self.fs / 2}")

  @property
  def ratio(self) -> float:
    """Fraction used by shift, cutout, lead_drop, erase and the partial ops."""
    return self.max_ratio * self.level / 10

  @property
  def amplitude(self) -> float:
    """Amplitude of the sine and noise ops."""
    return self.max_amplitude * self.level / 10

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict (for configs and exports)."""
    return _to_dict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any]) -> StMemRandAugment:
    """Inverse of to_dict; unknown keys are an error."""
    return _from_dict(cls, d)

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draws num_ops ops without replacement and fires each with probability prob."""
    x = _f32(x)
    picked = rng.choice(len(self.ops), size=self.num_ops, replace=False)
    fire = rng.random(self.num_ops) < self.prob
    unit = record_std(x) if self.relative else 1.0
    out = x.copy()
    for i, go in zip(picked, fire):
      if go:
        out = self.apply(self.ops[int(i)], out, rng, unit)
    return out

  def apply(self, op: str, x: np.ndarray, rng: np.random.Generator,
            unit: float | None = None) -> np.ndarray:
    """One named op at this level (always fires); `unit`: amplitude unit (None: own)."""
    x = _f32(x)
    n = x.shape[-1]
    if unit is None:
      unit = record_std(x) if self.relative else 1.0
    amp = self.amplitude * unit
    width = min(n, int(round(self.ratio * n)))
    if op == "shift":
      return shift(x, self.ratio, rng)
    if op == "cutout":
      out = x.copy()
      start = _window_start(n, width, rng)
      out[..., start:start + width] = 0.0
      return out
    if op == "lead_drop":
      return random_lead_mask(x, self.ratio, rng)[0]
    if op == "flip":
      return -x if self.flip_axis == "amplitude" else x[..., ::-1].copy()
    if op == "erase":
      starts = rng.integers(0, n - width + 1, size=x.shape[:-1])
      t = np.arange(n)
      gap = (t >= starts[..., None]) & (t < starts[..., None] + width)
      return np.where(gap, np.float32(0), x)
    if op in ("sine", "partial_sine"):
      f = rng.uniform(*self.sine_freq)
      phase = rng.uniform(0, 2 * np.pi)
      wave = amp * np.sin(2 * np.pi * f * np.arange(n) / self.fs + phase)
      if op == "partial_sine":
        start = _window_start(n, width, rng)
        wave[:start] = 0.0
        wave[start + width:] = 0.0
      return x + wave.astype(np.float32)
    if op == "partial_white_noise":
      out = x.copy()
      start = _window_start(n, width, rng)
      noise = rng.standard_normal(x.shape[:-1] + (width,), dtype=np.float32)
      out[..., start:start + width] += np.float32(amp) * noise
      return out
    raise ValueError(f"unknown op {op!r}; known: {ST_MEM_OPS}")


class Op:
  """Binds an op's parameters into an Augmenter: Op(roll, max_fraction=0.1)(x, rng)."""

  def __init__(self, fn: Callable[..., Any], **params: Any):
    self.fn = fn
    self.params = params

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = self.fn(x, rng=rng, **self.params)
    # random_lead_mask also returns its mask; a chain of Augmenters passes x.
    return out[0] if isinstance(out, tuple) else out

  def __repr__(self) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
    return f"Op({getattr(self.fn, '__name__', self.fn)}, {args})"


class Compose:
  """Applies Augmenters in order: Compose([Op(roll, max_fraction=0.1), ...])(x, rng)."""

  def __init__(self, ops: Sequence[Augmenter]):
    self.ops = tuple(ops)

  def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = _f32(x)
    for op in self.ops:
      x = op(x, rng)
    return x.copy() if not self.ops else x

  def __repr__(self) -> str:
    return f"Compose({list(self.ops)!r})"


AUGMENTATIONS = registry.Registry("augmentation")


@AUGMENTATIONS.register("scheduled")
def _scheduled(fs: float) -> ScheduledAugment:
  # AnyECG-CCTA's scheduled paired augmentation (SPEC section 4); its strength follows the
  # epoch the pipeline is in (train_iterator's augment_epochs).
  del fs
  return ScheduledAugment()


@AUGMENTATIONS.register("st_mem_randaugment")
def _st_mem_randaugment(fs: float) -> StMemRandAugment:
  # ST-MEM's fine-tune RandAugment: 2 of 8 ops, p 0.5, level 10 (SPEC section 1).
  return StMemRandAugment(fs=fs)


@AUGMENTATIONS.register("page_jitter")
def _page_jitter(fs: float) -> Any:
  # Printouts (input=image): shift / scale / rotate the page (data/images.py PageJitter).
  del fs
  from ecgjax.data import images  # pylint: disable=g-import-not-at-top
  return images.PageJitter()


def build(name: str, fs: float) -> Augmenter | None:
  """`config.augment`: "none", or the registered augmentation made for sampling rate `fs`."""
  if name == "none":
    return None
  return AUGMENTATIONS.get(name, key="config.augment")(fs)
