"""SCP-ECG files (EN 1064 / ISO 11073-91064) (`scp:PATH`), first increment.

No maintained SCP-ECG decoder exists on the package index, so this one is ours, written from
the standard's structure. A file is an SCP-ECG record when section 0 sits at byte 6 with its
"SCPECG" reserved field (whatever the file's name). Each file is one record: record_id = the
path relative to PATH (without a .scp extension), patient_id = section 1 tag 2 (the record_id
when empty), fold 0, unlabelled.

What is decoded: section 0's pointers; section 1's patient id (tag 2), acquisition date
(tag 25) and time (tag 26); section 3's leads (per lead its first and last sample and lead
code); section 6's rhythm data: amplitude multiplier (nV per count) -> mV, sample interval
(us) -> Hz, the per-lead byte lengths, and the encoding: Huffman-coded with the standard's
default table (section 2 says 19999) or stored as plain little-endian int16 (no section 2),
then undone first or second differences. Leads outside the standard 12 are left out and
listed; 8-lead files get III, aVR, aVL, aVF derived.

Not decoded yet, each a bad record naming the reason: reference-beat subtraction (section 3
flag; needs sections 4 and 5 added back), bimodal compression (decimated samples outside the
QRS), and files with their own Huffman tables. A CRC that does not match is reported in the
metadata (`crc_ok`), not refused: real files from handheld devices are often non-compliant.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data.formats import _per_file

# Section 3 lead codes of the standard 12 (the others are left out by name or number).
LEAD_CODES = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
              61: "III", 62: "aVR", 63: "aVL", 64: "aVF"}
OTHER_CODES = {9: "V7", 10: "V2R", 11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R",
               16: "X", 17: "Y", 18: "Z"}
DEFAULT_HUFFMAN = 19999


def is_scp_file(path: str) -> bool:
  """True when section 0's header, with its "SCPECG" field, starts at byte 6."""
  try:
    with open(path, "rb") as f:
      head = f.read(22)
  except OSError:
    return False
  return len(head) == 22 and head[16:22] == b"SCPECG" and head[8:10] == b"\x00\x00"


def crc_ccitt(data: bytes) -> int:
  """CRC-CCITT (polynomial 0x1021, initial 0xFFFF), the standard's record and section CRC."""
  crc = 0xFFFF
  for byte in data:
    crc ^= byte << 8
    for _ in range(8):
      crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
      crc &= 0xFFFF
  return crc


def _sections(raw: bytes, path: str, rid: str) -> dict[int, bytes]:
  """Section id -> its bytes (16-byte header included), from section 0's pointers."""
  if len(raw) < 22 + 16:
    raise sources.BadRecordError(rid, f"{path}: {len(raw)} bytes: too short for SCP-ECG")
  (length,) = struct.unpack_from("<I", raw, 2)
  if length > len(raw):
    raise sources.BadRecordError(rid, f"{path}: truncated: the record says {length} bytes, "
                                 f"the file has {len(raw)}")
  (s0_len,) = struct.unpack_from("<I", raw, 10)
  out: dict[int, bytes] = {}
  for pos in range(6 + 16, min(6 + s0_len, len(raw)) - 9, 10):
    sid, slen, index = struct.unpack_from("<HII", raw, pos)
    if slen == 0 or index == 0:
      continue  # a section the file does not have
    start = index - 1  # pointers count bytes from 1
    if start + slen > len(raw) or slen < 16:
      raise sources.BadRecordError(rid, f"{path}: section {sid} at byte {index} of {slen} "
                                   "bytes runs past the end of the file")
    out[sid] = raw[start:start + slen]
  return out


def _header_tags(sec1: bytes | None) -> dict[int, bytes]:
  tags: dict[int, bytes] = {}
  pos = 16
  while sec1 is not None and pos + 3 <= len(sec1):
    tag = sec1[pos]
    (n,) = struct.unpack_from("<H", sec1, pos + 1)
    if tag == 255:
      break
    tags.setdefault(tag, sec1[pos + 3:pos + 3 + n])
    pos += 3 + n
  return tags


def read_header(sections: dict[int, bytes]) -> dict[str, Any]:
  """Patient id, acquisition date (YYYY-MM-DD) and time (HH:MM:SS) from section 1."""
  tags = _header_tags(sections.get(1))
  text = lambda b: b.split(b"\x00", 1)[0].decode("latin-1").strip()
  date = tags.get(25, b"")
  time_ = tags.get(26, b"")
  return {"patient_id": text(tags.get(2, b"")),
          "acquisition_date": (f"{struct.unpack_from('<H', date)[0]:04d}-{date[2]:02d}-"
                               f"{date[3]:02d}" if len(date) >= 4 else ""),
          "acquisition_time": (f"{time_[0]:02d}:{time_[1]:02d}:{time_[2]:02d}"
                               if len(time_) >= 3 else "")}


def _default_huffman(data: bytes, n: int, path: str, rid: str, lead: str) -> np.ndarray:
  """Decodes the standard's default Huffman table: 0 is "0"; +k and -k (k = 1..8) are k ones,
  a zero and a sign bit (0 +, 1 -); nine ones and a 0 precede an 8-bit value, ten ones a
  16-bit value (two's complement, MSB first)."""
  bits = np.unpackbits(np.frombuffer(data, np.uint8))
  out = np.empty(n, np.int64)
  pos, total = 0, bits.size
  for i in range(n):
    ones = 0
    while ones < 9 and pos < total and bits[pos]:
      ones += 1
      pos += 1
    if pos >= total:
      raise sources.BadRecordError(rid, f"{path}: lead {lead}: Huffman data ends after {i} "
                                   f"of {n} samples")
    if ones == 0:
      out[i], pos = 0, pos + 1
    elif ones < 9:
      pos += 1  # the 0 that ends the run of ones
      out[i], pos = (-ones if bits[pos] else ones), pos + 1
    else:  # nine ones: the tenth bit says an 8- or a 16-bit value follows
      width = 16 if bits[pos] else 8
      pos += 1
      if pos + width > total:
        raise sources.BadRecordError(rid, f"{path}: lead {lead}: Huffman data ends inside "
                                     f"sample {i}")
      v = int("".join("1" if b else "0" for b in bits[pos:pos + width]), 2)
      out[i], pos = (v - (1 << width) if v >> (width - 1) else v), pos + width
  return out


def _undiff(d: np.ndarray, order: int) -> np.ndarray:
  x = d.astype(np.int64)
  if order == 1:
    return np.cumsum(x)
  if order == 2 and x.size > 2:
    # x[n] = d[n] + 2 x[n-1] - x[n-2] with x[0], x[1] stored as they are: the first
    # differences are a running sum of d from x[1] - x[0] on, x a running sum of those.
    steps = np.cumsum(np.concatenate([[x[1] - x[0]], x[2:]]))
    return np.concatenate([[x[0]], x[0] + np.cumsum(steps)])
  return x


def read_rhythm(sections: dict[int, bytes], path: str, rid: str) -> dict[str, Any]:
  """Section 6's leads as a standard_leads dict; BadRecordError naming what is not decoded."""
  sec3, sec6 = sections.get(3), sections.get(6)
  if sec3 is None or sec6 is None:
    missing = " and ".join(f"section {s}" for s, v in ((3, sec3), (6, sec6)) if v is None)
    raise sources.BadRecordError(rid, f"{path}: no {missing} (lead definitions / rhythm data)")
  n_leads, flags = sec3[16], sec3[17]
  if flags & 1:
    raise sources.BadRecordError(rid, f"{path}: reference-beat subtraction is used (section 3 "
                                 "flag): not decoded yet")
  leads = [struct.unpack_from("<IIB", sec3, 18 + 9 * k) for k in range(n_leads)]
  huffman = None
  if 2 in sections:
    (huffman,) = struct.unpack_from("<H", sections[2], 16)
    if huffman != DEFAULT_HUFFMAN:
      raise sources.BadRecordError(rid, f"{path}: own Huffman tables ({huffman}) are not "
                                   "decoded yet (only the default table, 19999)")
  avm, interval, diff, bimodal = struct.unpack_from("<HHBB", sec6, 16)
  if bimodal:
    raise sources.BadRecordError(rid, f"{path}: bimodal compression is used: not decoded yet")
  if not (avm and interval):
    raise sources.BadRecordError(rid, f"{path}: section 6 amplitude multiplier {avm} nV or "
                                 f"sample interval {interval} us is zero")
  lengths = struct.unpack_from(f"<{n_leads}H", sec6, 22)
  pos = 22 + 2 * n_leads
  rows, names, left_out = [], [], []
  for (first, last, code), size in zip(leads, lengths):
    name = LEAD_CODES.get(code) or OTHER_CODES.get(code) or f"lead code {code}"
    chunk = sec6[pos:pos + size]
    pos += size
    if len(chunk) < size:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: {size} bytes announced, "
                                   f"{len(chunk)} in section 6")
    n = int(last) - int(first) + 1
    if n <= 0:
      raise sources.BadRecordError(rid, f"{path}: lead {name}: samples {first}-{last}")
    if code not in LEAD_CODES:
      left_out.append(name)
      continue
    if huffman is None:
      if size < 2 * n:
        raise sources.BadRecordError(rid, f"{path}: lead {name}: {size} bytes for {n} int16 "
                                     "samples")
      d = np.frombuffer(chunk[:2 * n], "<i2").astype(np.int64)
    else:
      d = _default_huffman(chunk, n, path, rid, name)
    rows.append(_undiff(d, diff).astype(np.float64) * avm * 1e-6)  # nV -> mV
    names.append(name)
  if not rows:
    raise sources.BadRecordError(rid, f"{path}: no standard lead in section 3")
  size = min(r.size for r in rows)
  return _per_file.standard_leads([r[:size] for r in rows], names, 1e6 / interval, left_out)


class ScpSource(_per_file.PerFileSource):
  """SCP-ECG files, one record each, in the 12 standard leads (absent ones masked)."""

  format_name, what, strip_suffix = "scp", "SCP-ECG file (section 0 with SCPECG)", ".scp"
  is_format = staticmethod(is_scp_file)

  def _read(self, path: str, rid: str) -> tuple[bytes, dict[int, bytes]]:
    try:
      with open(path, "rb") as f:
        raw = f.read()
    except OSError as e:
      raise sources.BadRecordError(rid, f"{path}: cannot read: {e}") from None
    return raw, _sections(raw, path, rid)

  def read_file(self, path: str, rid: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(waveform, patient id, acquisition date/time and whether the CRC matches)."""
    raw, sections = self._read(path, rid)
    w = read_rhythm(sections, path, rid)
    header = read_header(sections)
    crc_ok = struct.unpack_from("<H", raw, 0)[0] == crc_ccitt(raw[2:])
    return w, header.pop("patient_id"), {**header, "crc_ok": crc_ok}

  def patient_of(self, path: str, rid: str) -> str:
    return read_header(self._read(path, rid)[1])["patient_id"]


def detect(path: str) -> bool:
  """An SCP-ECG file, or a directory whose first few files include one."""
  return _per_file.detect_in(path, is_scp_file)


@specs.register_format("scp", options={}, help="SCP-ECG (EN 1064) files: default-Huffman or "
                       "plain rhythm data; reference-beat subtraction not yet", detect=detect)
def _open_scp(spec: specs.DataSpec) -> sources.Source:
  return ScpSource(spec.path, None, spec)
