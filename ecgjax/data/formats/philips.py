"""Philips PageWriter / IntelliSpace / HeartStart XML ECGs (`philips:PATH?waveform=rhythm|median`).

PATH is one XML file or a directory searched recursively; a file is a Philips export when its
content holds a `<restingecgdata>` root (document versions 1.03, 1.04, 1.04.01), whatever its
name, extension or text encoding (UTF-8, or UTF-16 little- or big-endian, with or without a
byte-order mark). Each file is one record: record_id = the path relative to PATH (without a
.xml extension), patient_id = `patient/generalpatientdata/patientid` (the record_id when
empty), fold 0, unlabelled.

What is read (SPEC section 14): the `<parsedwaveforms>` element, base64, either plain
little-endian int16 per lead or XLI-compressed (`compressmethod`/`compression` = XLI). The XLI
decoding itself (per-lead LZW with 10-bit codes, then second-order deltas) is the `sierraecg`
package's, from the project that worked the format out (MIT); the rest is ours: the lead
labels, the rate (`samplespersecond`, or `signalcharacteristics/samplingrate` in 1.03), the
length `durationperchannel` (ms), the scale `resolution` (or `signalresolution`) in uV per
count -> mV, and the limb leads XLI stores as residuals s of I and II (in counts):
III = II - I - s, aVR = -s - floor((I + II) / 2), aVL = floor((I - III) / 2) - s,
aVF = floor((II + III) / 2) - s. `waveform=median` reads the representative beats
(`<repbeats>`, plain int16). Leads outside the standard 12 are left out and listed; a file
with only I, II and the precordial leads gets the other four derived. Patient id, acquisition
date/time, the machine and the interpretation statements are metadata (`PhilipsSource.info`).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
import xml.etree.ElementTree as ET

import numpy as np

from ecgjax import lazy
from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data.formats import _per_file

WAVEFORMS = ("rhythm", "median")
_xli = lazy.LazyModule("sierraecg.xli")  # only files that use the compression need it
_LIMB_RESIDUALS = ("III", "aVR", "aVL", "aVF")


def _head(path: str) -> str:
  # UTF-16 without a byte-order mark reads as text with a NUL between characters.
  return _per_file.head_text(path).replace("\x00", "")


def is_philips_file(path: str) -> bool:
  """True when the file's content starts a Philips <restingecgdata> document."""
  return bool(re.search(r"<\s*(\w+:)?restingecgdata[\s>]", _head(path)))


def _local(tag: str) -> str:
  return tag.rsplit("}", 1)[-1]


def _find(node: ET.Element | None, *names: str) -> ET.Element | None:
  """The first descendant path matching `names` by local name (namespaces vary by version)."""
  for name in names:
    if node is None:
      return None
    node = next((c for c in node.iter() if c is not node and _local(c.tag) == name), None)
  return node


def _text(node: ET.Element | None, *names: str, default: str = "") -> str:
  found = _find(node, *names) if names else node
  return default if found is None or found.text is None else found.text.strip()


def _decode_text(raw: bytes) -> str:
  if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
    text = raw.decode("utf-16")
  elif raw[:2] == b"<\x00":
    text = raw.decode("utf-16-le")
  elif raw[:2] == b"\x00<":
    text = raw.decode("utf-16-be")
  else:
    m = re.match(rb"\s*<\?xml[^>]*encoding=[\"']([\w.-]+)[\"']", raw)
    text = raw.decode(m.group(1).decode("ascii") if m else "utf-8")
  # The declaration names the bytes' encoding, which no longer applies to a str.
  return re.sub(r"^\s*<\?xml[^>]*\?>", "", text, count=1)


def _parse(path: str, rid: str) -> ET.Element:
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise sources.BadRecordError(rid, f"{path}: cannot read: {e}") from None
  try:
    root = ET.fromstring(_decode_text(raw))
  except (ET.ParseError, UnicodeDecodeError, LookupError) as e:
    raise sources.BadRecordError(rid, f"{path}: malformed XML: {e}") from None
  if _local(root.tag) != "restingecgdata":
    raise sources.BadRecordError(rid, f"{path}: root element <{_local(root.tag)}>, not "
                                 "<restingecgdata>")
  return root


def read_header(root: ET.Element) -> dict[str, Any]:
  """Patient id, acquisition date/time, machine, document version and statements."""
  acq = _find(root, "dataacquisition")
  statements = [t for t in ((s.text or "").strip() for s in root.iter()
                            if _local(s.tag) in ("leftstatement", "rightstatement")) if t]
  return {"patient_id": _text(root, "patient", "generalpatientdata", "patientid"),
          "acquisition_date": "" if acq is None else acq.get("date", ""),
          "acquisition_time": "" if acq is None else acq.get("time", ""),
          "machine": _text(acq, "machine"),
          "document_version": _text(root, "documentinfo", "documentversion"),
          "statements": statements}


def _number(value: str, what: str, path: str, rid: str) -> float:
  try:
    out = float(value)
  except ValueError:
    out = float("nan")
  if not out > 0:
    raise sources.BadRecordError(rid, f"{path}: {what} {value!r} is not a positive number")
  return out


def _b64(text: str, what: str, path: str, rid: str) -> bytes:
  try:
    raw = base64.b64decode("".join(text.split()), validate=True)
  except (binascii.Error, ValueError) as e:
    raise sources.BadRecordError(rid, f"{path}: {what} is not base64 ({e})") from None
  if not raw:
    raise sources.BadRecordError(rid, f"{path}: {what} is empty")
  return raw


def _labels(root: ET.Element, parsed: ET.Element, n_default: int = 12) -> list[str]:
  labels = parsed.get("leadlabels", "").split()
  if labels:
    n = parsed.get("numberofleads", "")
    return labels[:int(n)] if n.isdigit() else labels
  n = _text(root, "signalcharacteristics", "numberchannelsallocated")
  n = int(n) if n.isdigit() else n_default
  return list(leads_lib.LEADS_12[:n]) + [f"Channel {i + 1}" for i in range(12, n)]


def _xli_leads(raw: bytes, labels: list[str], path: str, rid: str) -> list[np.ndarray]:
  # Walk the chunk headers first: a truncated or corrupt stream names its lead here rather
  # than decoding to a short or garbled lead.
  offset, k = 0, 0
  while offset < len(raw):
    name = labels[k] if k < len(labels) else f"#{k + 1}"
    if offset + 8 > len(raw):
      raise sources.BadRecordError(rid, f"{path}: XLI stream ends inside the header of lead "
                                   f"{name}")
    size = int.from_bytes(raw[offset:offset + 4], "little", signed=True)
    if size <= 0 or offset + 8 + size > len(raw):
      raise sources.BadRecordError(rid, f"{path}: XLI chunk of lead {name} claims {size} "
                                   f"bytes, {len(raw) - offset - 8} are left")
    offset, k = offset + 8 + size, k + 1
  try:
    out = _xli.xli_decode(raw, labels)
  except Exception as e:  # pylint: disable=broad-except  (a corrupt stream, whatever breaks)
    raise sources.BadRecordError(rid, f"{path}: XLI waveform does not decode: "
                                 f"{type(e).__name__}: {e}") from None
  return [np.asarray(x, np.int64) for x in out]


def _restore_limb_leads(counts: dict[str, np.ndarray]) -> None:
  """Turns XLI's residuals of III, aVR, aVL, aVF into the leads (in counts, in place)."""
  if not all(k in counts for k in ("I", "II", *_LIMB_RESIDUALS)):
    return
  i, ii = counts["I"], counts["II"]
  counts["III"] = ii - i - counts["III"]
  iii = counts["III"]
  counts["aVR"] = -counts["aVR"] - np.floor_divide(i + ii, 2)
  counts["aVL"] = np.floor_divide(i - iii, 2) - counts["aVL"]
  counts["aVF"] = np.floor_divide(ii + iii, 2) - counts["aVF"]


def _assemble(counts: dict[str, np.ndarray], uv_per_count: float, fs: float
              ) -> dict[str, Any]:
  rows, names, left_out = [], [], []
  for name, c in counts.items():
    try:
      canon = leads_lib.canonical_lead(name)
    except ValueError:
      left_out.append(name)
      continue
    rows.append(c.astype(np.float64) * uv_per_count * 1e-3)
    names.append(canon)
  return rows, names, left_out


def read_rhythm(root: ET.Element, path: str, rid: str) -> dict[str, Any]:
  """The <parsedwaveforms> leads: {"signal" (12, n) mV, "lead_mask", "fs", "derived",
  "left_out", "compression"}; BadRecordError naming what is wrong."""
  parsed = _find(root, "parsedwaveforms")
  if parsed is None:
    raise sources.BadRecordError(rid, f"{path}: no <parsedwaveforms> element")
  fs = _number(parsed.get("samplespersecond") or _text(root, "signalcharacteristics",
                                                       "samplingrate"),
               "sampling rate", path, rid)
  res = _number(parsed.get("resolution") or _text(root, "signalcharacteristics",
                                                  "signalresolution", default="5"),
                "resolution (uV per count)", path, rid)
  duration = _number(parsed.get("durationperchannel", ""), "durationperchannel (ms)", path,
                     rid)
  n = int(round(duration * fs / 1000.0))
  encoding = parsed.get("dataencoding", "Base64")
  if encoding.lower() != "base64":
    raise sources.BadRecordError(rid, f"{path}: waveform data encoding {encoding!r} is not "
                                 "supported (only Base64)")
  compression = parsed.get("compressmethod") or parsed.get("compression") or "Uncompressed"
  labels = _labels(root, parsed)
  raw = _b64(parsed.text or "", "<parsedwaveforms>", path, rid)
  if compression.upper() == "XLI":
    leads = _xli_leads(raw, labels, path, rid)
  elif compression.lower() in ("uncompressed", "none", "false"):
    if len(raw) < 2 * n * len(labels):
      raise sources.BadRecordError(rid, f"{path}: {len(raw)} bytes of samples, {len(labels)} "
                                   f"leads x {n} samples need {2 * n * len(labels)}")
    flat = np.frombuffer(raw[:2 * n * len(labels)], "<i2").astype(np.int64)
    leads = list(flat.reshape(len(labels), n))
  else:
    raise sources.BadRecordError(rid, f"{path}: waveform compression {compression!r} is not "
                                 "supported (XLI or uncompressed)")
  if len(leads) < len(labels):
    raise sources.BadRecordError(rid, f"{path}: {len(leads)} leads decoded, the file names "
                                 f"{len(labels)} ({' '.join(labels)})")
  short = [f"{lab} {x.size}" for lab, x in zip(labels, leads) if x.size < n]
  if short:
    raise sources.BadRecordError(rid, f"{path}: leads shorter than durationperchannel's {n} "
                                 f"samples: {', '.join(short)}")
  counts = {lab: x[:n] for lab, x in zip(labels, leads)}
  if compression.upper() == "XLI":
    _restore_limb_leads(counts)
  rows, names, left_out = _assemble(counts, res, fs)
  if not rows:
    raise sources.BadRecordError(rid, f"{path}: no standard lead among {' '.join(labels)}")
  return {**_per_file.standard_leads(rows, names, fs, left_out), "compression": compression}


def read_median(root: ET.Element, path: str, rid: str) -> dict[str, Any]:
  """The representative beats (<repbeats>, plain int16 per lead), as read_rhythm's dict."""
  reps = _find(root, "repbeats")
  if reps is None:
    raise sources.BadRecordError(rid, f"{path}: no <repbeats> (representative beats)")
  fs = _number(reps.get("samplespersec") or reps.get("samplespersecond")
               or _text(root, "signalcharacteristics", "samplingrate"),
               "representative-beat sampling rate", path, rid)
  res = _number(reps.get("resolution") or _text(root, "signalcharacteristics",
                                                "signalresolution", default="5"),
                "representative-beat resolution", path, rid)
  counts: dict[str, np.ndarray] = {}
  for beat in (c for c in reps.iter() if _local(c.tag) == "repbeat"):
    name = beat.get("leadname", "")
    wave = _find(beat, "waveform")
    text = (wave if wave is not None else beat).text or ""
    raw = _b64(text, f"representative beat of lead {name}", path, rid)
    if len(raw) % 2:
      raise sources.BadRecordError(rid, f"{path}: representative beat of lead {name}: "
                                   f"{len(raw)} bytes, not whole int16 samples")
    counts[name] = np.frombuffer(raw, "<i2").astype(np.int64)
  if not counts:
    raise sources.BadRecordError(rid, f"{path}: <repbeats> holds no <repbeat>")
  size = min(c.size for c in counts.values())
  rows, names, left_out = _assemble({k: v[:size] for k, v in counts.items()}, res, fs)
  if not rows:
    raise sources.BadRecordError(rid, f"{path}: no standard lead among the representative "
                                 "beats")
  return {**_per_file.standard_leads(rows, names, fs, left_out), "compression": "none"}


class PhilipsSource(_per_file.PerFileSource):
  """Philips XML files, one record each, in the 12 standard leads (absent ones masked)."""

  format_name, what, strip_suffix = ("philips", "Philips XML file (a <restingecgdata> "
                                     "document)", ".xml")
  waveforms = WAVEFORMS
  is_format = staticmethod(is_philips_file)

  def read_file(self, path: str, rid: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(waveform, patient id, header metadata with the compression used)."""
    root = _parse(path, rid)
    read = read_median if self.waveform == "median" else read_rhythm
    w = read(root, path, rid)
    header = read_header(root)
    return w, header.pop("patient_id"), {**header, "compression": w["compression"]}

  def patient_of(self, path: str, rid: str) -> str:
    return read_header(_parse(path, rid))["patient_id"]


def detect(path: str) -> bool:
  """A Philips XML file, or a directory whose first few files include one."""
  return _per_file.detect_in(path, is_philips_file)


@specs.register_format(
    "philips",
    options={"waveform": specs.Option(str, "rhythm", "rhythm (default: <parsedwaveforms>) or "
                                      "median (<repbeats>)")},
    help="Philips PageWriter/IntelliSpace XML (<restingecgdata>, XLI-compressed or plain)",
    detect=detect)
def _open_philips(spec: specs.DataSpec, *, waveform: str) -> sources.Source:
  return PhilipsSource(spec.path, waveform.lower(), spec)
