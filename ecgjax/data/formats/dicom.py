"""DICOM ECG waveforms (`dicom:FILE_OR_DIR?waveform=rhythm|median`).

PATH is one DICOM file or a directory searched recursively; a file is read when pydicom finds a
`WaveformSequence` in it (12-lead ECG, general ECG or hemodynamic waveform storage), whatever its
name. pydicom parses the container; the scaling is written here, from the file's own fields, as
SPEC section 14 gives it: physical = stored x ChannelSensitivity x
ChannelSensitivityCorrectionFactor + ChannelBaseline, in the ChannelSensitivityUnitsSequence
unit (uV or mV) -> mV. Each file is one record: record_id = its path relative to PATH, patient_id
= PatientID (the record_id when empty), fold 0, unlabelled.

Multiplex groups: the rhythm waveform is the longest group (by duration); `waveform=median`
takes the group labelled as median / representative beats (MultiplexGroupLabel), or refuses.
Lead names come from each channel's source code (SCPECG 5.6.3-9-N or MDC 2:N) or, failing that,
its meaning ("Lead II", "Lead aVR"); channels that are not standard leads are left out and
listed. 8 stored leads get III, aVR, aVL, aVF derived exactly (present leads).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data.formats import _per_file

WAVEFORMS = ("rhythm", "median")
# The lead number N of SCPECG "5.6.3-9-N" and MDC "2:N" codes.
_CODE_LEADS = {1: "I", 2: "II", 61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 3: "V1", 4: "V2",
               5: "V3", 6: "V4", 7: "V5", 8: "V6"}
_UNITS_TO_MV = {"uv": 1e-3, "mv": 1.0, "v": 1e3}
_DTYPES = {("SS", 16): "<i2", ("US", 16): "<u2", ("SB", 8): "i1", ("UB", 8): "u1",
           ("SL", 32): "<i4", ("UL", 32): "<u4"}


def _pydicom():
  import pydicom  # pylint: disable=g-import-not-at-top
  return pydicom


def _lead_name(channel: Any) -> str | None:
  """The canonical lead a channel definition names, or None (not a standard lead)."""
  source = getattr(channel, "ChannelSourceSequence", None)
  item = source[0] if source else None
  code = str(getattr(item, "CodeValue", "") or "")
  m = re.fullmatch(r"(?:5\.6\.3-9-|2:)(\d+)", code.strip())
  if m and int(m.group(1)) in _CODE_LEADS:
    return _CODE_LEADS[int(m.group(1))]
  meaning = str(getattr(item, "CodeMeaning", "") or getattr(channel, "ChannelLabel", "") or "")
  meaning = re.sub(r"\(.*?\)", "", meaning).strip()
  try:
    return leads_lib.canonical_lead(meaning)
  except ValueError:
    return None


_MAX_BEAT_S = 2.0  # an unlabelled group this short, beside a longer one, is a median beat


def _group_seconds(group: Any) -> float:
  fs = float(getattr(group, "SamplingFrequency", 0) or 0)
  return int(getattr(group, "NumberOfWaveformSamples", 0) or 0) / fs if fs > 0 else 0.0


def _pick_group(ds: Any, waveform: str, path: str, rid: str) -> Any:
  groups = list(getattr(ds, "WaveformSequence", None) or [])
  if not groups:
    raise sources.BadRecordError(rid, f"{path}: no WaveformSequence (not a DICOM waveform)")
  if waveform == "rhythm":
    return max(groups, key=_group_seconds)
  label = lambda g: str(getattr(g, "MultiplexGroupLabel", "") or "")
  for g in groups:
    if "median" in label(g).lower() or "representative" in label(g).lower():
      return g
  # Some devices (a GE MV360 export, seen) leave the groups unlabelled: a group of at most
  # _MAX_BEAT_S seconds beside a longer one is the representative beat.
  beats = [g for g in groups if not label(g) and 0 < _group_seconds(g) <= _MAX_BEAT_S]
  if beats and len(groups) > 1 and max(map(_group_seconds, groups)) > _MAX_BEAT_S:
    return min(beats, key=_group_seconds)
  labels = [label(g) or "(unlabelled)" for g in groups]
  raise sources.BadRecordError(rid, f"{path}: no median multiplex group (groups: "
                               f"{', '.join(labels)})")


def read_waveform(ds: Any, path: str, rid: str, waveform: str = "rhythm") -> dict[str, Any]:
  """{"signal" (12, n) mV in LEADS_12 order, "lead_mask", "fs", "derived", "left_out"} of a
  pydicom dataset; BadRecordError naming what is wrong."""
  group = _pick_group(ds, waveform, path, rid)
  fs = float(getattr(group, "SamplingFrequency", 0) or 0)
  n_ch = int(getattr(group, "NumberOfWaveformChannels", 0) or 0)
  n = int(getattr(group, "NumberOfWaveformSamples", 0) or 0)
  if not fs > 0 or n_ch < 1 or n < 1:
    raise sources.BadRecordError(rid, f"{path}: multiplex group with SamplingFrequency {fs}, "
                                 f"{n_ch} channels, {n} samples")
  key = (str(getattr(group, "WaveformSampleInterpretation", "SS")),
         int(getattr(group, "WaveformBitsAllocated", 16)))
  if key not in _DTYPES:
    raise sources.BadRecordError(rid, f"{path}: waveform samples {key[0]} in {key[1]} bits are "
                                 "not supported")
  raw = bytes(getattr(group, "WaveformData", b"") or b"")
  dtype = np.dtype(_DTYPES[key])
  if len(raw) < n * n_ch * dtype.itemsize:
    raise sources.BadRecordError(rid, f"{path}: WaveformData holds {len(raw)} bytes, "
                                 f"{n} samples x {n_ch} channels need {n * n_ch * dtype.itemsize}")
  stored = np.frombuffer(raw[:n * n_ch * dtype.itemsize], dtype).reshape(n, n_ch)
  channels = list(getattr(group, "ChannelDefinitionSequence", None) or [])
  if len(channels) != n_ch:
    raise sources.BadRecordError(rid, f"{path}: {len(channels)} channel definitions for "
                                 f"{n_ch} channels")
  rows, names, left_out = [], [], []
  for k, ch in enumerate(channels):
    name = _lead_name(ch)
    if name is None:
      src = getattr(ch, "ChannelSourceSequence", None)
      left_out.append(str(getattr(src[0], "CodeMeaning", "") if src else "") or f"channel {k}")
      continue
    if name in names:
      raise sources.BadRecordError(rid, f"{path}: lead {name} appears twice")
    units = getattr(ch, "ChannelSensitivityUnitsSequence", None)
    unit = str(getattr(units[0], "CodeValue", "") if units else "").strip().lower()
    if unit not in _UNITS_TO_MV:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: sensitivity unit {unit!r} "
                                   "(known: uV, mV, V)")
    sens = float(getattr(ch, "ChannelSensitivity", 1.0) or 1.0)
    corr = float(getattr(ch, "ChannelSensitivityCorrectionFactor", 1.0) or 1.0)
    base = float(getattr(ch, "ChannelBaseline", 0.0) or 0.0)
    rows.append((stored[:, k].astype(np.float64) * sens * corr + base) * _UNITS_TO_MV[unit])
    names.append(name)
  if not rows:
    raise sources.BadRecordError(rid, f"{path}: no standard ECG lead among the channels "
                                 f"({', '.join(left_out)})")
  return _per_file.standard_leads(rows, names, fs, left_out)


def _read(path: str, rid: str) -> Any:
  pydicom = _pydicom()
  try:
    return pydicom.dcmread(path)
  except FileNotFoundError:
    raise sources.BadRecordError(rid, f"missing file {path}") from None
  except Exception as e:  # pylint: disable=broad-except  (pydicom raises many types)
    raise sources.BadRecordError(rid, f"{path}: not a readable DICOM file: {e}") from None


def is_dicom_waveform(path: str) -> bool:
  """A DICOM file (the 'DICM' preamble) holding a WaveformSequence."""
  try:
    with open(path, "rb") as f:
      if f.read(132)[128:] != b"DICM":
        return False
    ds = _pydicom().dcmread(path, stop_before_pixels=True, specific_tags=["WaveformSequence"])
  except Exception:  # pylint: disable=broad-except
    return False
  return "WaveformSequence" in ds


class DicomSource(_per_file.PerFileSource):
  """DICOM waveform files, one record each, in the 12 standard leads (absent ones masked)."""

  format_name, what = "dicom", "DICOM waveform file (a WaveformSequence)"
  waveforms = WAVEFORMS
  is_format = staticmethod(is_dicom_waveform)


  def read_file(self, path: str, rid: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(waveform, PatientID, AcquisitionDateTime)."""
    ds = _read(path, rid)
    w = read_waveform(ds, path, rid, self.waveform)
    return w, str(getattr(ds, "PatientID", "") or ""), {
        "acquisition_datetime": str(getattr(ds, "AcquisitionDateTime", "") or "")}

  def patient_of(self, path: str, rid: str) -> str:
    try:  # the one tag, not the waveform
      ds = _pydicom().dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # pylint: disable=broad-except  (its record fails where it is read)
      return ""
    return str(getattr(ds, "PatientID", "") or "")


def detect(path: str) -> bool:
  """A DICOM waveform file, or a directory whose first few files include one."""
  return _per_file.detect_in(path, is_dicom_waveform)


@specs.register_format(
    "dicom",
    options={"waveform": specs.Option(str, "rhythm", "rhythm (the longest multiplex group, "
                                      "default) or median")},
    help="DICOM ECG waveforms (WaveformSequence; pydicom reads the container)",
    detect=detect)
def _open_dicom(spec: specs.DataSpec, *, waveform: str) -> sources.Source:
  return DicomSource(spec.path, waveform.lower(), spec)
