"""EDF and EDF+ recordings with ECG channels (`edf:FILE_OR_DIR`).

PATH is one file or a directory searched recursively; a file is read when its header starts as
EDF's does (version "0" in the first 8 bytes), whatever its name. edfio (a numpy-only EDF/EDF+
library) reads the container and applies each signal's physical/digital min/max scaling; the
units are ours: each ECG channel's physical dimension (uV, mV, V) -> mV. Each file is one record:
record_id = its path relative to PATH, patient_id = the EDF+ patient code or the first word of
the local patient identification (the record_id when neither is set), fold 0, unlabelled.

Channels: a label naming a standard lead, alone or after an "ECG"/"EKG" prefix ("ECG II",
"EKG-V1", "aVR"), is a lead; every other signal (EEG, respiration, SpO2, ...) is left out and
listed, and EDF+ annotation signals are the annotations (`EdfSource.info`). The leads are read at
their common rate: the rate most lead channels share (the highest on a tie); a lead at another
rate is left out and listed with its rate. 8 stored leads get III, aVR, aVL, aVF derived.
"""

from __future__ import annotations

import collections
import re
from typing import Any

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data.formats import _per_file

_UNITS_TO_MV = {"uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "mv": 1.0, "v": 1e3}
_EDF_VERSION = b"0       "


def _edfio():
  import edfio  # pylint: disable=g-import-not-at-top
  return edfio


def lead_of_label(label: str) -> str | None:
  """The canonical lead an EDF signal label names ("ECG II", "EKG-V1"), or None."""
  key = re.sub(r"^\s*(ecg|ekg)[\s_\-:.]*", "", label.strip(), flags=re.I)
  try:
    return leads_lib.canonical_lead(key) if key else None
  except ValueError:
    return None


def is_edf(path: str) -> bool:
  """True when the file starts with EDF's version field."""
  try:
    with open(path, "rb") as f:
      head = f.read(256)
  except OSError:
    return False
  return len(head) == 256 and head[:8] == _EDF_VERSION and head[184:192].strip().isdigit()


def _read(path: str, rid: str) -> Any:
  try:
    return _edfio().read_edf(path, lazy_load_data=False)
  except FileNotFoundError:
    raise sources.BadRecordError(rid, f"missing file {path}") from None
  except Exception as e:  # pylint: disable=broad-except  (edfio raises many types)
    raise sources.BadRecordError(rid, f"{path}: not a readable EDF file: {e}") from None


def _patient(edf: Any) -> str:
  try:
    code = str(edf.patient.code)
    if code and code.upper() != "X":
      return code
  except Exception:  # pylint: disable=broad-except  (plain EDF: no EDF+ patient fields)
    pass
  words = str(getattr(edf, "local_patient_identification", "") or "").split()
  return words[0] if words and words[0].upper() != "X" else ""


def read_signals(edf: Any, path: str, rid: str) -> dict[str, Any]:
  """{"signal" (12, n) mV in LEADS_12 order, "lead_mask", "fs", "derived", "left_out"} of an
  edfio Edf; BadRecordError naming what is wrong."""
  leads, left_out = [], []
  for sig in edf.signals:
    name = lead_of_label(sig.label)
    if name is None:
      left_out.append(sig.label.strip() or "(unlabelled)")
    else:
      leads.append((name, sig))
  if not leads:
    raise sources.BadRecordError(rid, f"{path}: no ECG lead among the signals "
                                 f"({', '.join(left_out) or 'none'})")
  rates = collections.Counter(float(s.sampling_frequency) for _, s in leads)
  fs = max(rates, key=lambda r: (rates[r], r))
  rows, names = [], []
  for name, sig in leads:
    if float(sig.sampling_frequency) != fs:
      left_out.append(f"{sig.label.strip()} (at {float(sig.sampling_frequency):g} Hz, the "
                      f"leads' common rate is {fs:g} Hz)")
      continue
    if name in names:
      raise sources.BadRecordError(rid, f"{path}: lead {name} appears twice")
    unit = str(sig.physical_dimension).strip().lower()
    if unit not in _UNITS_TO_MV:
      raise sources.BadRecordError(rid, f"{path}: signal {sig.label.strip()!r}: physical "
                                   f"dimension {sig.physical_dimension!r} (known: uV, mV, V)")
    rows.append(np.asarray(sig.data, np.float64) * _UNITS_TO_MV[unit])
    names.append(name)
  if len({r.size for r in rows}) > 1:
    raise sources.BadRecordError(rid, f"{path}: leads at {fs:g} Hz have different lengths")
  if rows[0].size == 0:
    raise sources.BadRecordError(rid, f"{path}: zero-length record (0 samples)")
  signal = np.stack(rows)
  if not np.isfinite(signal).all():
    raise sources.BadRecordError(rid, f"{path}: NaN or inf samples")
  return _per_file.standard_leads(signal, names, fs, left_out)


class EdfSource(_per_file.PerFileSource):
  """EDF / EDF+ files with ECG channels, one record each, in the 12 standard leads."""

  format_name, what = "edf", "EDF file"
  is_format = staticmethod(is_edf)

  def read_file(self, path: str, rid: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(waveform, patient code, start date and time, annotations)."""
    edf = _read(path, rid)
    w = read_signals(edf, path, rid)
    try:
      start = f"{edf.startdate} {edf.starttime}"
    except Exception:  # pylint: disable=broad-except  (an anonymised or odd start date)
      start = ""
    return w, _patient(edf), {
        "start": start,
        "annotations": [(float(a.onset), a.duration, str(a.text)) for a in edf.annotations]}

  def patient_of(self, path: str, rid: str) -> str:
    try:  # the header, not the data records
      return _patient(_edfio().read_edf(path, lazy_load_data=True))
    except Exception:  # pylint: disable=broad-except  (its record fails where it is read)
      return ""


def detect(path: str) -> bool:
  """An EDF file, or a directory whose first few files include one."""
  return _per_file.detect_in(path, is_edf)


@specs.register_format("edf", options={},
                       help="EDF / EDF+ recordings with ECG channels (edfio reads the container)",
                       detect=detect)
def _open_edf(spec: specs.DataSpec) -> sources.Source:
  return EdfSource(spec.path, spec=spec)
