"""The model input contract: what every record becomes before a model sees it.

`InputContract` is stored in model exports (`to_dict`) and names the reference
pipelines (`preset`), so an export written by interop or by training carries what a
probe or a deployment must apply. It is plain data with validation: the signal
processing that carries it out is `ecgjax.data.transforms.Preprocessing`, a subclass.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import functools
from typing import Any, TypeVar

from ecgjax import errors
from ecgjax import leads as leads_lib

RESAMPLE_METHODS = ("fft", "poly", "linear", "linear_span")
BANDPASS_DESIGNS = ("cascade", "butter_ba")
BASELINE_METHODS = ("reflect", "medfilt")
STANDARDIZE_MODES = (None, "global", "per_lead")
STANDARDIZE_SCOPES = ("window", "record")
VIEWS = ("crops", "segments")
_C = TypeVar("_C", bound="InputContract")


@dataclasses.dataclass(frozen=True)
class InputContract:
  """The model input contract: what every record becomes before a model sees it.

  `Preprocessing.prepare()` runs once per record, in this order:
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
    if self.standardize not in STANDARDIZE_MODES:
      raise ValueError(f"standardize must be one of {STANDARDIZE_MODES}, "
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
  def from_dict(cls: type[_C], d: Mapping[str, Any]) -> _C:
    """Inverse of to_dict; unknown keys (e.g. from a newer export) are an error."""
    # "Preprocessing": the name exports and users have always seen for these keys.
    errors.check_keys("Preprocessing", d, (f.name for f in dataclasses.fields(cls)))
    d = dict(d)
    if d.get("leads") is not None:
      d["leads"] = tuple(d["leads"])
    if d.get("bandpass") is not None:
      d["bandpass"] = tuple(d["bandpass"])
    return cls(**d)

  def contract(self) -> InputContract:
    """The plain contract (drops a subclass's processing methods)."""
    return InputContract.from_dict(self.to_dict())


def st_mem_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12) -> InputContract:
  """ST-MEM: 250 Hz (FFT), 2250 samples, 0.67-40 Hz order 5, global z-score."""
  return InputContract(fs=250.0, samples=2250, leads=tuple(leads),
                       bandpass=(0.67, 40.0), filter_order=5,
                       standardize="global", resample_method="fft")


def ecg_fm_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12) -> InputContract:
  """ECG-FM as fairseq-signals runs it: linear resampling to 500 Hz (its grid), per-lead
  z-score of the WHOLE record (constant lead -> 0), no filter, then every non-overlapping 5 s
  segment (2500 samples, remainder dropped, not re-standardised); a record's embedding is the
  mean of its segments'. A record shorter than 5 s has no segment (a bad record here)."""
  return InputContract(fs=500.0, samples=2500, leads=tuple(leads),
                       bandpass=None, standardize="per_lead",
                       resample_method="linear", standardize_scope="record",
                       views="segments")


def ecgfounder_preprocessing(leads: Sequence[str] = leads_lib.LEADS_12,
                             mains: float = 50.0) -> InputContract:
  """ECGFounder as its code runs (SPEC section 10): the first 10 s, linear resampling to
  500 Hz with both endpoints spanned (its resample_unequal), filtfilt(iirnotch(mains, 30)),
  ONE butter(4, [0.67, 40], 'bandpass') b/a design through filtfilt, x - medfilt(x, 201)
  (zero-padded edges; kernel int(0.4 fs) + 1 made odd), z-score over (leads, samples) with
  std + 1e-8. A record shorter than 10 s is zero-padded to 5000 after the z-score.
  `mains`: 50 (ECGFounder); 60 for North-American data.
  """
  return InputContract(fs=500.0, samples=5000, leads=tuple(leads),
                       bandpass=(0.67, 40.0), filter_order=4, bandpass_design="butter_ba",
                       standardize="global", standardize_eps=1e-8,
                       standardize_scope="record", resample_method="linear_span",
                       notch=mains, notch_q=30.0, baseline_window_s=0.4,
                       baseline_method="medfilt", head_s=10.0)


PRESETS: dict[str, Callable[..., InputContract]] = {
    "st_mem": st_mem_preprocessing,
    "ecg_fm": ecg_fm_preprocessing,
    "ecgfounder": ecgfounder_preprocessing,
}


def preset(name: str, leads: Sequence[str] = leads_lib.LEADS_12) -> InputContract:
  """The named reference preprocessing ("st_mem", "ecg_fm", "ecgfounder")."""
  try:
    make = PRESETS[name]
  except KeyError:
    raise ValueError(f"unknown preprocessing preset {name!r}; known: "
                     f"{', '.join(sorted(PRESETS))}") from None
  return make(leads)
