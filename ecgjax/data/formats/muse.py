"""GE MUSE XML resting ECGs (`muse:PATH?waveform=rhythm|median`).

PATH is one XML file or a directory searched recursively; a file is a MUSE export when its
content holds a `<RestingECG>` root, whatever its name, extension or text encoding (the XML
declaration says it; MUSE writes ISO-8859-1 or UTF-8, some tools UTF-16). Each file is one
record: record_id = the path relative to PATH (without a .xml extension), patient_id =
`PatientDemographics/PatientID` (the record_id when empty), fold 0, unlabelled.

What is read (SPEC section 14): the `<Waveform>` whose `WaveformType` is Rhythm (default) or
Median; its rate `SampleBase` x 10^`SampleExponent`; per `<LeadData>` the base64 little-endian
int16 `WaveFormData`, scaled by `LeadAmplitudeUnitsPerBit` in `LeadAmplitudeUnits`
(MICROVOLTS or MILLIVOLTS) to mV. `FirstSampleBaseline` is ignored, as public MUSE parsers do,
and kept in the metadata. Each lead's `LeadDataCRC32` is checked against its decoded bytes
(`crc=ignore` to skip the check). MUSE stores 8 leads (I, II, V1-V6): III, aVR, aVL and aVF are
derived exactly (`leads.derive_limb_leads`) and are present leads; the metadata lists them.
Leads that are not among the standard 12 are left out and listed. Acquisition date and time and
the diagnosis statements are metadata too (`MuseSource.info`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
import xml.etree.ElementTree as ET
import zlib

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data.formats import _per_file

WAVEFORMS = ("rhythm", "median")
_UNITS_TO_MV = {"MICROVOLTS": 1e-3, "MICROVOLT": 1e-3, "UV": 1e-3, "MILLIVOLTS": 1.0,
                "MILLIVOLT": 1.0, "MV": 1.0}


def is_muse_file(path: str) -> bool:
  """True when the file's content starts a MUSE RestingECG document."""
  return bool(re.search(r"<\s*RestingECG[\s>]", _per_file.head_text(path)))


def _text(node: ET.Element | None, path: str, default: str = "") -> str:
  found = None if node is None else node.find(path)
  return default if found is None or found.text is None else found.text.strip()


def _parse(path: str, rid: str) -> ET.Element:
  try:
    with open(path, "rb") as f:
      root = ET.fromstring(f.read())  # bytes: the XML declaration picks the encoding
  except OSError as e:
    raise sources.BadRecordError(rid, f"{path}: cannot read: {e}") from None
  except ET.ParseError as e:
    raise sources.BadRecordError(rid, f"{path}: malformed XML: {e}") from None
  if root.tag != "RestingECG":
    raise sources.BadRecordError(rid, f"{path}: root element <{root.tag}>, not <RestingECG>")
  return root


def read_header(root: ET.Element) -> dict[str, Any]:
  """Patient id, acquisition date and time, and the diagnosis statements of a MUSE file."""
  statements = [s for s in (_text(st, "StmtText") for st in root.iter("DiagnosisStatement"))
                if s]
  return {"patient_id": _text(root, "PatientDemographics/PatientID"),
          "acquisition_date": _text(root, "TestDemographics/AcquisitionDate"),
          "acquisition_time": _text(root, "TestDemographics/AcquisitionTime"),
          "statements": statements}


def read_waveform(root: ET.Element, path: str, rid: str, waveform: str = "rhythm",
                  check_crc: bool = True) -> dict[str, Any]:
  """{"signal" (12, n) mV in LEADS_12 order, "lead_mask", "fs", "derived", "left_out",
  "first_sample_baseline"} of the file's `waveform`; BadRecordError naming what is wrong.

  With `check_crc`, a lead whose `LeadDataCRC32` is not the CRC-32 of its decoded bytes (what
  MUSE writes: checked on a real export, tests/real_muse_median.py) is a corrupt record.
  """
  wanted = [w for w in root.findall("Waveform")
            if _text(w, "WaveformType").lower() == waveform]
  if not wanted:
    kinds = sorted({_text(w, "WaveformType") for w in root.findall("Waveform")})
    raise sources.BadRecordError(rid, f"{path}: no {waveform} <Waveform> (the file has: "
                                 f"{', '.join(k for k in kinds if k) or 'none'})")
  wave = wanted[0]
  try:
    fs = float(_text(wave, "SampleBase")) * 10.0 ** float(_text(wave, "SampleExponent", "0"))
  except ValueError:
    fs = 0.0
  if not fs > 0:
    raise sources.BadRecordError(rid, f"{path}: {waveform} waveform has no valid SampleBase "
                                 f"({_text(wave, 'SampleBase')!r})")
  rows, names, left_out, baselines = [], [], [], {}
  for lead in wave.findall("LeadData"):
    name = _text(lead, "LeadID")
    try:
      canon = leads_lib.canonical_lead(name)
    except ValueError:
      left_out.append(name or "(unnamed)")
      continue
    if canon in names:
      raise sources.BadRecordError(rid, f"{path}: lead {canon} appears twice")
    try:
      raw = base64.b64decode(_text(lead, "WaveFormData"), validate=False)
    except (binascii.Error, ValueError) as e:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: WaveFormData is not base64 "
                                   f"({e})") from None
    if not raw or len(raw) % 2:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: WaveFormData decodes to "
                                   f"{len(raw)} bytes, not a whole number of int16 samples")
    crc = _text(lead, "LeadDataCRC32")
    if check_crc and crc.isdigit() and int(crc) != zlib.crc32(raw):
      raise sources.BadRecordError(rid, f"{path}: lead {name}: WaveFormData fails its "
                                   f"LeadDataCRC32 ({zlib.crc32(raw)} != {crc}): corrupt "
                                   "waveform (crc=ignore reads it anyway)")
    counts = np.frombuffer(raw, "<i2")
    want = _text(lead, "LeadSampleCountTotal")
    if want.isdigit() and int(want) != counts.size:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: {counts.size} samples decoded, "
                                   f"LeadSampleCountTotal says {want}")
    unit = _text(lead, "LeadAmplitudeUnits", "MICROVOLTS").upper()
    if unit not in _UNITS_TO_MV:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: unknown LeadAmplitudeUnits "
                                   f"{unit!r} (known: MICROVOLTS, MILLIVOLTS)")
    try:
      per_bit = float(_text(lead, "LeadAmplitudeUnitsPerBit", "4.88"))
    except ValueError:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: LeadAmplitudeUnitsPerBit "
                                   f"{_text(lead, 'LeadAmplitudeUnitsPerBit')!r} is not a "
                                   "number") from None
    baselines[canon] = _text(lead, "FirstSampleBaseline", "0")
    rows.append(counts.astype(np.float64) * per_bit * _UNITS_TO_MV[unit])
    names.append(canon)
  if not rows:
    raise sources.BadRecordError(rid, f"{path}: the {waveform} waveform has no standard lead")
  if len({r.size for r in rows}) > 1:
    sizes = ", ".join(f"{n} {r.size}" for n, r in zip(names, rows))
    raise sources.BadRecordError(rid, f"{path}: leads of different lengths ({sizes})")
  return {**_per_file.standard_leads(rows, names, fs, left_out),
          "first_sample_baseline": baselines}


class MuseSource(_per_file.PerFileSource):
  """MUSE XML files, one record each, in the 12 standard leads (absent ones masked)."""

  format_name, what, strip_suffix = "muse", "MUSE XML file (a <RestingECG> document)", ".xml"
  waveforms = WAVEFORMS
  is_format = staticmethod(is_muse_file)
  check_crc = True


  def read_file(self, path: str, rid: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(waveform, patient id, acquisition date/time, statements and FirstSampleBaseline)."""
    root = _parse(path, rid)
    w = read_waveform(root, path, rid, self.waveform, self.check_crc)
    header = read_header(root)
    return w, header.pop("patient_id"), {**header,
                                         "first_sample_baseline": w["first_sample_baseline"]}

  def patient_of(self, path: str, rid: str) -> str:
    return read_header(_parse(path, rid))["patient_id"]


def detect(path: str) -> bool:
  """A MUSE file, or a directory whose first few files include one."""
  return _per_file.detect_in(path, is_muse_file)


@specs.register_format(
    "muse",
    options={"waveform": specs.Option(str, "rhythm", "rhythm (default) or median: which "
                                      "<Waveform> to read"),
             "crc": specs.Option(str, "check", "check (default): a lead failing its "
                                 "LeadDataCRC32 is a bad record; ignore: read it anyway")},
    help="GE MUSE XML resting ECGs (<RestingECG>; 8 stored leads, the other 4 derived)",
    detect=detect)
def _open_muse(spec: specs.DataSpec, *, waveform: str, crc: str) -> sources.Source:
  if crc.lower() not in ("check", "ignore"):
    raise ValueError(f"muse: crc={crc!r}: one of check, ignore")
  source = MuseSource(spec.path, waveform.lower(), spec)
  source.check_crc = crc.lower() == "check"
  return source
