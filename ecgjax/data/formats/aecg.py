"""HL7 annotated ECG, the FDA's format (`aecg:FILE_OR_DIR?waveform=rhythm|median`).

PATH is one XML file or a directory searched recursively; a file is read when its root is
`<AnnotatedECG>` in the urn:hl7-org:v3 namespace, whatever its name or text encoding. Each file
is one record: record_id = its path relative to PATH (without .xml), patient_id = the trial
subject's id extension (the record_id when absent), fold 0, unlabelled.

What is read (SPEC section 14): a `series` (rhythm: the longest `component/series`;
`waveform=median`: a `derivation/derivedSeries`, the representative beats) holds a sequence set
with a time sequence (`increment` value and unit: the sample interval, so fs = 1 / increment) and
one sequence per lead (`MDC_ECG_LEAD_I` ... `MDC_ECG_LEAD_V6`), each `SLIST_PQ` with `origin` and
`scale` (value and unit) and space-separated `digits`: physical = origin + scale x digit, in
uV or mV -> mV. Other sequences (derived or non-standard leads: V3R, ...) are left out and
listed. 8 stored leads get III, aVR, aVL, aVF derived exactly.
"""

from __future__ import annotations

import re
from typing import Any
import xml.etree.ElementTree as ET

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data.formats import _per_file

NS = "urn:hl7-org:v3"
WAVEFORMS = ("rhythm", "median")
_UNITS_TO_MV = {"uv": 1e-3, "mv": 1.0, "v": 1e3}
_TIME_TO_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def _q(path: str) -> str:
  """An ElementPath with every step in the HL7 v3 namespace."""
  return "/".join(step if step in ("", ".", "..") or step.startswith("*")
                  else f"{{{NS}}}{step}" for step in path.split("/"))


def is_aecg_file(path: str) -> bool:
  """True when the file's content starts an HL7 AnnotatedECG document."""
  return bool(re.search(r"<\s*(\w+:)?AnnotatedECG[\s>]", _per_file.head_text(path)))


def _parse(path: str, rid: str) -> ET.Element:
  try:
    with open(path, "rb") as f:
      root = ET.fromstring(f.read())
  except OSError as e:
    raise sources.BadRecordError(rid, f"{path}: cannot read: {e}") from None
  except ET.ParseError as e:
    raise sources.BadRecordError(rid, f"{path}: malformed XML: {e}") from None
  if root.tag != f"{{{NS}}}AnnotatedECG":
    raise sources.BadRecordError(rid, f"{path}: root element {root.tag}, not HL7 v3 "
                                 "AnnotatedECG")
  return root


def _lead_of_code(code: str) -> str | None:
  m = re.fullmatch(r"MDC_ECG_LEAD_(\w+)", code.strip())
  if not m:
    return None
  try:
    return leads_lib.canonical_lead(m.group(1))
  except ValueError:
    return None


def _series(root: ET.Element, waveform: str, path: str, rid: str) -> ET.Element:
  if waveform == "median":
    found = root.findall(_q(".//derivation/derivedSeries"))
    if not found:
      raise sources.BadRecordError(rid, f"{path}: no derivedSeries (representative beats)")
    return found[0]
  found = [s for s in root.findall(_q("component/series"))]
  if not found:
    raise sources.BadRecordError(rid, f"{path}: no component/series (no rhythm waveform)")

  def n_samples(series: ET.Element) -> int:
    digits = [s.find(_q("value/digits")) for s in _own_sequences(series)]
    return max((len(d.text.split()) for d in digits if d is not None and d.text), default=0)

  return max(found, key=n_samples)


def _own_sequences(series: ET.Element) -> list[ET.Element]:
  """The sequences of the series' own sequence set (the one with the most sequences).

  Only the direct `component/sequenceSet` children count: real files (the HL7 ballot sample
  among them) nest the representative beats inside the rhythm series as
  `derivation/derivedSeries`, whose sequences must not be read as more rhythm leads.
  """
  sets = series.findall(_q("component/sequenceSet"))
  per_set = [s.findall(_q("component/sequence")) for s in sets]
  return max(per_set, key=len, default=[])


def _float_attr(node: ET.Element | None, attr: str = "value") -> float | None:
  try:
    return float(node.get(attr)) if node is not None else None
  except (TypeError, ValueError):
    return None


def read_series(root: ET.Element, path: str, rid: str, waveform: str = "rhythm"
                ) -> dict[str, Any]:
  """{"signal" (12, n) mV in LEADS_12 order, "lead_mask", "fs", "derived", "left_out"}."""
  series = _series(root, waveform, path, rid)
  fs, rows, names, left_out = None, [], [], []
  for seq in _own_sequences(series):
    code_node = seq.find(_q("code"))
    code = code_node.get("code", "") if code_node is not None else ""
    value = seq.find(_q("value"))
    if code.startswith("TIME_"):
      inc = value.find(_q("increment")) if value is not None else None
      step = _float_attr(inc)
      unit = (inc.get("unit", "s") if inc is not None else "s").lower()
      if step and step > 0 and unit in _TIME_TO_S:
        fs = 1.0 / (step * _TIME_TO_S[unit])
      continue
    name = _lead_of_code(code)
    if name is None:
      left_out.append(code or "(no code)")
      continue
    if name in names:
      raise sources.BadRecordError(rid, f"{path}: lead {name} appears twice in the series")
    origin = value.find(_q("origin")) if value is not None else None
    scale = value.find(_q("scale")) if value is not None else None
    digits = value.find(_q("digits")) if value is not None else None
    s, o = _float_attr(scale), _float_attr(origin) or 0.0
    if s is None or digits is None:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: no scale or no digits")
    unit = (scale.get("unit", "") or "").lower()
    if unit not in _UNITS_TO_MV or (origin is not None and
                                    (origin.get("unit", unit) or unit).lower() != unit):
      raise sources.BadRecordError(rid, f"{path}: lead {name}: unit {scale.get('unit')!r} "
                                   "(known: uV, mV, V; origin and scale alike)")
    try:
      counts = np.array((digits.text or "").split(), dtype=np.float64)
    except ValueError:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: digits are not numbers") from None
    rows.append((o + s * counts) * _UNITS_TO_MV[unit])
    names.append(name)
  if fs is None:
    raise sources.BadRecordError(rid, f"{path}: no time sequence with an increment (unknown "
                                 "sampling rate)")
  if not rows:
    raise sources.BadRecordError(rid, f"{path}: no standard lead in the series")
  if len({r.size for r in rows}) > 1 or rows[0].size == 0:
    sizes = ", ".join(f"{n} {r.size}" for n, r in zip(names, rows))
    raise sources.BadRecordError(rid, f"{path}: leads of different or zero lengths ({sizes})")
  return _per_file.standard_leads(rows, names, fs, left_out)


def _subject(root: ET.Element) -> str:
  node = root.find(_q(".//trialSubject/id"))
  return (node.get("extension") or node.get("root") or "") if node is not None else ""


class AecgSource(_per_file.PerFileSource):
  """HL7 aECG files, one record each, in the 12 standard leads (absent ones masked)."""

  format_name, what = "aecg", "HL7 aECG file (an AnnotatedECG document)"
  strip_suffix = ".xml"
  waveforms = WAVEFORMS
  is_format = staticmethod(is_aecg_file)


  def read_file(self, path: str, rid: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(waveform, trial subject id, nothing more)."""
    root = _parse(path, rid)
    return read_series(root, path, rid, self.waveform), _subject(root), {}

  def patient_of(self, path: str, rid: str) -> str:
    return _subject(_parse(path, rid))


def detect(path: str) -> bool:
  """An aECG file, or a directory whose first few files include one."""
  return _per_file.detect_in(path, is_aecg_file)


@specs.register_format(
    "aecg",
    options={"waveform": specs.Option(str, "rhythm", "rhythm (the longest series, default) "
                                      "or median (the derived representative beats)")},
    help="HL7 annotated ECG (FDA aECG XML: sequences with origin and scale)",
    detect=detect)
def _open_aecg(spec: specs.DataSpec, *, waveform: str) -> sources.Source:
  return AecgSource(spec.path, waveform.lower(), spec)
