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
import itertools
import os
import re
from typing import Any

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs

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


def _iter_files(root: str):
  if os.path.isfile(root):
    yield root
    return
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for f in sorted(filenames):
      yield os.path.join(dirpath, f)


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
  signal, all_names, derived = leads_lib.derive_limb_leads(signal, names)
  signal, mask = leads_lib.reorder(signal.astype(np.float32), all_names, leads_lib.LEADS_12)
  return {"signal": signal, "lead_mask": mask, "fs": fs, "derived": derived,
          "left_out": tuple(left_out)}


class EdfSource(sources.Source):
  """EDF / EDF+ files with ECG channels, one record each, in the 12 standard leads."""

  def __init__(self, root: str, spec: specs.DataSpec | None = None):
    self.root, self.spec = os.fspath(root), spec
    self.fs, self.leads = None, leads_lib.LEADS_12
    files = [p for p in _iter_files(self.root) if is_edf(p)]
    if not files:
      raise ValueError(f"edf: no EDF file at {self.root}")
    base = self.root if os.path.isdir(self.root) else os.path.dirname(self.root)
    self._paths = files
    self._record_id = np.array([os.path.relpath(p, base) for p in files])
    self._patients: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self._paths)

  def info(self, index: int) -> dict[str, Any]:
    """Patient, start date and time, the rate, derived and left-out channels, annotations."""
    i = self._check_index(index)
    rid, path = str(self._record_id[i]), self._paths[i]
    edf = _read(path, rid)
    w = read_signals(edf, path, rid)
    try:
      start = f"{edf.startdate} {edf.starttime}"
    except Exception:  # pylint: disable=broad-except  (an anonymised or odd start date)
      start = ""
    return {"patient_id": _patient(edf), "start": start, "fs": w["fs"],
            "derived_leads": list(w["derived"]), "left_out_channels": list(w["left_out"]),
            "annotations": [(float(a.onset), a.duration, str(a.text)) for a in edf.annotations]}

  def __getitem__(self, index: int) -> sources.Record:
    i = self._check_index(index)
    rid, path = str(self._record_id[i]), self._paths[i]
    edf = _read(path, rid)
    w = read_signals(edf, path, rid)
    return sources.make_record(w["signal"], w["fs"], self.leads, rid, _patient(edf) or rid, (),
                               0, lead_mask=w["lead_mask"])

  def metadata(self) -> dict[str, np.ndarray]:
    if self._patients is None:
      ids = []
      for path, rid in zip(self._paths, self._record_id):
        try:
          ids.append(_patient(_edfio().read_edf(path, lazy_load_data=True)) or str(rid))
        except Exception:  # pylint: disable=broad-except  (its record fails where it is read)
          ids.append(str(rid))
      self._patients = np.array(ids)
    n = len(self)
    return {"record_id": self._record_id.copy(), "patient_id": self._patients.copy(),
            "fold": np.zeros(n, np.int64), "labels": np.zeros((n, 0), np.float32)}


def detect(path: str) -> bool:
  """An EDF file, or a directory whose first few files include one."""
  return any(is_edf(p) for p in itertools.islice(_iter_files(path), 5))


@specs.register_format("edf", options={},
                       help="EDF / EDF+ recordings with ECG channels (edfio reads the container)",
                       detect=detect)
def _open_edf(spec: specs.DataSpec) -> sources.Source:
  return EdfSource(spec.path, spec)
