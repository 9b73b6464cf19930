"""SCP-ECG files (EN 1064 / ISO 11073-91064) (`scp:PATH?waveform=rhythm|median`).

No maintained SCP-ECG decoder exists on the package index, so this one is ours, written from
the standard's structure. A file is an SCP-ECG record when section 0 sits at byte 6 with its
"SCPECG" reserved field (whatever the file's name). Each file is one record: record_id = the
path relative to PATH (without a .scp extension), patient_id = section 1 tag 2 (the record_id
when empty), fold 0, unlabelled.

What is decoded: section 0's pointers; section 1's patient id (tag 2), acquisition date
(tag 25) and time (tag 26); section 2's Huffman tables (19999: the standard's default table;
else the file's own tables, table switches included); section 3's leads (first and last sample,
lead code) and its reference-beat-subtraction flag; section 4's reference beat length and
fiducial and every QRS's subtraction zone; sections 5 (reference beats) and 6 (rhythm or
residual): amplitude multiplier (nV per count) -> mV, sample interval (us) -> Hz, the per-lead
byte lengths, Huffman-coded or plain little-endian int16 (no section 2), first or second
differences undone. Where reference-beat subtraction was used, reference beat 0 is added back
over the subtraction zone of every type-0 QRS, its fiducial on the QRS's. `waveform=median`
reads section 5's reference beat instead. Leads outside the standard 12 are left out and listed;
8-lead files get III, aVR, aVL, aVF derived.

Not decoded, a bad record naming the reason: bimodal compression (samples decimated outside the
QRS: the standard's reconstruction interpolates and filters). A CRC that does not match is
reported in the metadata (`crc_ok`), not refused: real files from handheld devices are often
non-compliant.
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
WAVEFORMS = ("rhythm", "median")


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


# The standard's default Huffman table as code structures (prefix bits, total bits, table
# mode, base value, base code): the base code holds the code's first bit in its lowest bit.
DEFAULT_TABLE = tuple(zip(
    (1, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 10, 10),
    (1, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 18, 26),
    (1,) * 19,
    (0, 1, -1, 2, -2, 3, -3, 4, -4, 5, -5, 6, -6, 7, -7, 8, -8, 0, 0),
    (0, 1, 5, 3, 11, 7, 23, 15, 47, 31, 95, 63, 191, 127, 383, 255, 767, 511, 1023)))


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


def read_huffman_tables(sec2: bytes, path: str, rid: str) -> list[tuple] | None:
  """Section 2's own tables (a list of code-structure tuples each), None for the default."""
  (n_tables,) = struct.unpack_from("<H", sec2, 16)
  if n_tables == DEFAULT_HUFFMAN:
    return None
  tables, pos = [], 18
  for t in range(n_tables):
    if pos + 2 > len(sec2):
      raise sources.BadRecordError(rid, f"{path}: section 2 ends inside Huffman table {t + 1}")
    (n_codes,) = struct.unpack_from("<H", sec2, pos)
    pos += 2
    if n_codes == 0 or pos + 9 * n_codes > len(sec2):
      raise sources.BadRecordError(rid, f"{path}: section 2: Huffman table {t + 1} announces "
                                   f"{n_codes} codes, the section holds fewer")
    codes = [struct.unpack_from("<BBBhI", sec2, pos + 9 * k) for k in range(n_codes)]
    pos += 9 * n_codes
    for prefix, whole, mode, value, _ in codes:
      if not (1 <= prefix <= 32 and prefix <= whole <= prefix + 32) or (
          mode == 0 and not 1 <= value <= n_tables):
        raise sources.BadRecordError(rid, f"{path}: section 2: Huffman table {t + 1} has an "
                                     f"invalid code ({prefix} prefix bits, {whole} in all, "
                                     f"mode {mode}, value {value})")
    tables.append(tuple(codes))
  if not tables:
    raise sources.BadRecordError(rid, f"{path}: section 2 defines no Huffman table")
  return tables


def huffman_decode(data: bytes, n: int, tables: list[tuple], path: str, rid: str,
                   lead: str) -> np.ndarray:
  """Decodes n values with a file's own tables: bits are read from each byte's top bit down,
  the first bit of a code lowest in its base code; a code of mode 0 switches to the table its
  base value names (from 1, until the next switch); a code longer than its prefix carries the
  value in the next bits (two's complement, MSB first), otherwise the value is its base value."""
  lookup = [{(p, c): (w, m, v) for p, w, m, v, c in t} for t in tables]
  longest = [max(p for p, *_ in t) for t in tables]
  bits = np.unpackbits(np.frombuffer(data, np.uint8)).tolist()
  out, pos, total, table = [], 0, len(bits), 0
  while len(out) < n:
    code = width = 0
    while True:
      if pos >= total:
        raise sources.BadRecordError(rid, f"{path}: lead {lead}: Huffman data ends after "
                                     f"{len(out)} of {n} samples")
      code |= bits[pos] << width
      width, pos = width + 1, pos + 1
      hit = lookup[table].get((width, code))
      if hit is not None:
        break
      if width >= longest[table]:
        raise sources.BadRecordError(rid, f"{path}: lead {lead}: no code of Huffman table "
                                     f"{table + 1} matches the bits at sample {len(out)}")
    whole, mode, value = hit
    if mode == 0:
      table = value - 1
      continue
    extra = whole - width
    if extra:
      if pos + extra > total:
        raise sources.BadRecordError(rid, f"{path}: lead {lead}: Huffman data ends inside "
                                     f"sample {len(out)}")
      v = 0
      for b in bits[pos:pos + extra]:
        v = (v << 1) | b
      pos += extra
      value = v - (1 << extra) if v >> (extra - 1) else v
    out.append(value)
  return np.asarray(out, np.int64)


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


def _lead_name(code: int) -> str:
  return LEAD_CODES.get(code) or OTHER_CODES.get(code) or f"lead code {code}"


def _decode_leads(sec: bytes, sid: int, counts: list[int], tables: Any, path: str, rid: str,
                  names: list[str], wanted: list[bool]
                  ) -> tuple[list[np.ndarray | None], int, int]:
  """Section 5 or 6: (per-lead counts with differences undone, nV per count, us per sample).

  `tables` is "plain" (no section 2: little-endian int16), None (the default Huffman table)
  or the file's own tables; `counts` the samples each lead must give. Leads not `wanted` (those
  left out) are stepped over undecoded: None in their place.
  """
  if len(sec) < 22 + 2 * len(names):
    raise sources.BadRecordError(rid, f"{path}: section {sid} is too short for its header")
  avm, interval, diff, bimodal = struct.unpack_from("<HHBB", sec, 16)
  if sid == 6 and bimodal:
    raise sources.BadRecordError(rid, f"{path}: bimodal compression is used (decimated samples "
                                 "outside the QRS): not decoded")
  if not (avm and interval):
    raise sources.BadRecordError(rid, f"{path}: section {sid} amplitude multiplier {avm} nV "
                                 f"or sample interval {interval} us is zero")
  lengths = struct.unpack_from(f"<{len(names)}H", sec, 22)
  pos, rows = 22 + 2 * len(names), []
  for name, size, n, want in zip(names, lengths, counts, wanted):
    chunk = sec[pos:pos + size]
    pos += size
    if len(chunk) < size:
      raise sources.BadRecordError(rid, f"{path}: section {sid}: lead {name}: {size} bytes "
                                   f"announced, {len(chunk)} in the section")
    if not want:
      rows.append(None)
      continue
    if tables == "plain":
      if size < 2 * n:
        raise sources.BadRecordError(rid, f"{path}: section {sid}: lead {name}: {size} bytes "
                                     f"for {n} int16 samples")
      d = np.frombuffer(chunk[:2 * n], "<i2").astype(np.int64)
    elif tables is None:
      d = _default_huffman(chunk, n, path, rid, name)
    else:
      d = huffman_decode(chunk, n, tables, path, rid, name)
    rows.append(_undiff(d, diff))
  return rows, avm, interval


def _section4(sec4: bytes, path: str, rid: str) -> tuple[int, int, list[tuple[int, ...]]]:
  """(reference beat length in ms, its fiducial sample (from 1), [(type, start, fiducial, end)]
  of every QRS, sample numbers from 1)."""
  if len(sec4) < 22:
    raise sources.BadRecordError(rid, f"{path}: section 4 is too short")
  length_ms, fiducial, n_qrs = struct.unpack_from("<HHH", sec4, 16)
  if len(sec4) < 22 + 14 * n_qrs:
    raise sources.BadRecordError(rid, f"{path}: section 4 announces {n_qrs} QRS complexes, "
                                 "holds fewer")
  return length_ms, fiducial, [struct.unpack_from("<HIII", sec4, 22 + 14 * k)
                               for k in range(n_qrs)]


def read_waveform(sections: dict[int, bytes], path: str, rid: str, waveform: str = "rhythm"
                  ) -> dict[str, Any]:
  """Section 6's rhythm (reference beats added back where subtracted) or section 5's reference
  beat (`waveform="median"`) as a standard_leads dict; BadRecordError naming what is wrong."""
  sec3 = sections.get(3)
  if sec3 is None:
    raise sources.BadRecordError(rid, f"{path}: no section 3 (lead definitions)")
  n_leads, flags = sec3[16], sec3[17]
  leads = [struct.unpack_from("<IIB", sec3, 18 + 9 * k) for k in range(n_leads)]
  names = [_lead_name(code) for _, _, code in leads]
  wanted = [code in LEAD_CODES for _, _, code in leads]
  tables: Any = "plain"
  if 2 in sections:
    tables = read_huffman_tables(sections[2], path, rid)
  subtracted = bool(flags & 1)
  beat = None
  if waveform == "median" or subtracted:
    missing = [s for s in (4, 5) if s not in sections]
    if missing:
      why = "reference-beat subtraction is used" if subtracted else "waveform=median"
      raise sources.BadRecordError(rid, f"{path}: {why} but the file has no section "
                                   f"{' or '.join(map(str, missing))} (reference beats)")
    length_ms, fiducial, zones = _section4(sections[4], path, rid)
    (interval5,) = struct.unpack_from("<H", sections[5], 18)
    interval6 = struct.unpack_from("<H", sections[6], 18)[0] if 6 in sections else interval5
    if waveform == "rhythm" and interval5 != interval6:
      raise sources.BadRecordError(rid, f"{path}: reference beats at {interval5} us per "
                                   f"sample, rhythm at {interval6} us: cannot add them back")
    n_beat = 1000 * length_ms // interval5 if interval5 else 0
    if n_beat <= 0:
      raise sources.BadRecordError(rid, f"{path}: reference beat of {length_ms} ms at "
                                   f"{interval5} us per sample holds no sample")
    beat = _decode_leads(sections[5], 5, [n_beat] * n_leads, tables, path, rid, names, wanted)
  if waveform == "median":
    rows, avm, interval = beat
  else:
    if 6 not in sections:
      raise sources.BadRecordError(rid, f"{path}: no section 6 (rhythm data)")
    counts = [int(last) - int(first) + 1 for first, last, _ in leads]
    bad = [f"{name} {first}-{last}" for name, (first, last, _), n in zip(names, leads, counts)
           if n <= 0]
    if bad:
      raise sources.BadRecordError(rid, f"{path}: leads with no samples ({', '.join(bad)})")
    rows, avm, interval = _decode_leads(sections[6], 6, counts, tables, path, rid, names,
                                        wanted)
    if subtracted:
      rows = _add_reference_beats(rows, leads, beat, avm, fiducial, zones)
  keep = [(name, r) for name, r, want in zip(names, rows, wanted) if want]
  left_out = [name for name, want in zip(names, wanted) if not want]
  if not keep:
    raise sources.BadRecordError(rid, f"{path}: no standard lead in section 3")
  size = min(r.size for _, r in keep)
  return _per_file.standard_leads([r[:size].astype(np.float64) * avm * 1e-6 for _, r in keep],
                                  [n for n, _ in keep], 1e6 / interval, left_out)  # nV -> mV


def _add_reference_beats(rows: list[np.ndarray | None], leads: list[tuple[int, ...]],
                         beat: tuple, avm: int, fiducial: int, zones: list[tuple[int, ...]]
                         ) -> list[np.ndarray | None]:
  """The residual plus reference beat 0 over every type-0 QRS's subtraction zone, the beat's
  fiducial on the QRS's (sample numbers from 1, as ECG Toolkit reads them), in section 6's
  counts (the beat rescaled when section 5 has another multiplier)."""
  beats, avm5, _ = beat  # its sample interval is section 6's (read_waveform checks)
  out = []
  for (first, _, _), residual, ref in zip(leads, rows, beats):
    if residual is None:  # a left-out lead, not decoded
      out.append(None)
      continue
    x = residual.astype(np.float64)
    ref = ref.astype(np.float64) * (avm5 / avm)
    for kind, start, fc, end in zones:
      if kind != 0 or end < start:
        continue
      s = np.arange(start, end + 1, dtype=np.int64)
      at, k = s - first, s - fc + fiducial - 1
      ok = (at >= 0) & (at < x.size) & (k >= 0) & (k < ref.size)
      x[at[ok]] += ref[k[ok]]
    out.append(x)
  return out


class ScpSource(_per_file.PerFileSource):
  """SCP-ECG files, one record each, in the 12 standard leads (absent ones masked)."""

  format_name, what, strip_suffix = "scp", "SCP-ECG file (section 0 with SCPECG)", ".scp"
  waveforms = WAVEFORMS
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
    w = read_waveform(sections, path, rid, self.waveform)
    header = read_header(sections)
    crc_ok = struct.unpack_from("<H", raw, 0)[0] == crc_ccitt(raw[2:])
    return w, header.pop("patient_id"), {**header, "crc_ok": crc_ok}

  def patient_of(self, path: str, rid: str) -> str:
    return read_header(self._read(path, rid)[1])["patient_id"]


def detect(path: str) -> bool:
  """An SCP-ECG file, or a directory whose first few files include one."""
  return _per_file.detect_in(path, is_scp_file)


@specs.register_format(
    "scp",
    options={"waveform": specs.Option(str, "rhythm", "rhythm (section 6, default) or median "
                                      "(section 5's reference beat)")},
    help="SCP-ECG (EN 1064) files: Huffman-coded (default or own tables) or plain, with "
         "reference-beat subtraction undone", detect=detect)
def _open_scp(spec: specs.DataSpec, *, waveform: str) -> sources.Source:
  return ScpSource(spec.path, waveform.lower(), spec)
