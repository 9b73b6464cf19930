"""SCP-ECG: sections, the default and own Huffman tables, difference coding, reference-beat
subtraction undone, units, and what is not decoded named as bad records (files written by the
test's own SCP writer: no real SCP file was available)."""

import struct

import numpy as np
import pytest

from ecgjax import data
from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data.formats import scp

CODES = {"I": 1, "II": 2, "V1": 3, "V2": 4, "V3": 5, "V4": 6, "V5": 7, "V6": 8, "V3R": 11,
         "III": 61, "aVR": 62, "aVL": 63, "aVF": 64}


def huffman_default(values) -> bytes:
  bits = []
  for v in map(int, values):
    if v == 0:
      bits.append("0")
    elif abs(v) <= 8:
      bits.append("1" * abs(v) + "0" + ("1" if v < 0 else "0"))
    elif -128 <= v <= 127:
      bits.append("1111111110" + format(v & 0xFF, "08b"))
    else:
      bits.append("1111111111" + format(v & 0xFFFF, "016b"))
  s = "".join(bits)
  s += "0" * (-len(s) % 8)
  return bytes(int(s[i:i + 8], 2) for i in range(0, len(s), 8))


def _diff(x, order):
  x = np.asarray(x, np.int64)
  if order == 1:
    return np.concatenate([x[:1], np.diff(x)])
  if order == 2:
    d = x.copy()
    d[2:] = x[2:] - 2 * x[1:-1] + x[:-2]
    return d
  return x


def _section(sid: int, body: bytes) -> bytes:
  reserved = b"SCPECG" if sid == 0 else b"\x00" * 6
  rest = struct.pack("<HIBB", sid, 16 + len(body), 20, 20) + reserved + body
  return struct.pack("<H", scp.crc_ccitt(rest)) + rest


def huffman_own(values, table) -> bytes:
  """Encodes with one table of (prefix bits, total bits, mode, base value, base code) codes:
  the base code's low bit is sent first; a longer code's value follows MSB first."""
  by_value = {v: (p, w, c) for p, w, m, v, c in table if m == 1 and p == w}
  escapes = sorted((w - p, p, c) for p, w, m, v, c in table if m == 1 and w > p)
  out = []
  for v in map(int, values):
    if v in by_value:
      p, _, c = by_value[v]
      out.append("".join(str((c >> k) & 1) for k in range(p)))
      continue
    extra, p, c = next(e for e in escapes if -(1 << (e[0] - 1)) <= v < (1 << (e[0] - 1)))
    out.append("".join(str((c >> k) & 1) for k in range(p)) + format(v & ((1 << extra) - 1),
                                                                   f"0{extra}b"))
  bits = "".join(out)
  bits += "0" * (-len(bits) % 8)
  return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def tables_section(tables) -> bytes:
  return struct.pack("<H", len(tables)) + b"".join(
      struct.pack("<H", len(t)) + b"".join(struct.pack("<BBBhI", *code) for code in t)
      for t in tables)


def _coded(leads, diff, huffman):
  if huffman is True:
    return [huffman_default(_diff(v, diff)) for v in leads.values()]
  if huffman is False:
    return [_diff(v, diff).astype("<i2").tobytes() for v in leads.values()]
  return [huffman(_diff(v, diff)) for v in leads.values()]  # an own encoder


def scp_file(leads: dict, *, avm=5000, interval=2000, diff=2, huffman=True, flags=0x04,
             bimodal=0, patient="SCP-7", table=19999, sec2=None, beat=None, beat_ms=0,
             fiducial=0, zones=(), avm5=None, interval5=None) -> bytes:
  """An SCP-ECG record: sections 0, 1, (2), 3, (4, 5) and 6; `beat` (lead -> counts) is
  stored in section 5 with section 4's `beat_ms`, `fiducial` and QRS `zones`."""
  names = list(leads)
  n = len(next(iter(leads.values())))
  tags = (struct.pack("<BH", 2, len(patient) + 1) + patient.encode() + b"\x00"
          + struct.pack("<BHHBB", 25, 4, 2021, 3, 9) + struct.pack("<BHBBB", 26, 3, 14, 5, 9)
          + struct.pack("<BH", 255, 0))
  sec3 = struct.pack("<BB", len(names), flags) + b"".join(
      struct.pack("<IIB", 1, n, CODES[k]) for k in names)
  coded = _coded(leads, diff, huffman)
  sec6 = (struct.pack("<HHBB", avm, interval, diff, bimodal)
          + struct.pack(f"<{len(names)}H", *map(len, coded)) + b"".join(coded))
  bodies = {1: tags, 3: sec3, 6: sec6}
  if huffman is not False:
    bodies[2] = sec2 if sec2 is not None else struct.pack("<H", table)
  if beat is not None:
    bodies[4] = struct.pack("<HHH", beat_ms, fiducial, len(zones)) + b"".join(
        struct.pack("<HIII", *z) for z in zones) + b"".join(
        struct.pack("<II", z[1], z[3]) for z in zones)
    bcoded = _coded(beat, diff, huffman)
    bodies[5] = (struct.pack("<HHBB", avm5 or avm, interval5 or interval, diff, 0)
                 + struct.pack(f"<{len(names)}H", *map(len, bcoded)) + b"".join(bcoded))
  sec0_len = 16 + 10 * 12
  pos, pointers, blobs = 6 + sec0_len + 1, [], []
  for sid in range(12):
    if sid == 0:
      pointers.append(struct.pack("<HII", 0, sec0_len, 7))
    elif sid in bodies:
      blob = _section(sid, bodies[sid])
      pointers.append(struct.pack("<HII", sid, len(blob), pos))
      blobs.append(blob)
      pos += len(blob)
    else:
      pointers.append(struct.pack("<HII", sid, 0, 0))
  body = _section(0, b"".join(pointers)) + b"".join(blobs)
  rest = struct.pack("<I", 6 + len(body)) + body
  return struct.pack("<H", scp.crc_ccitt(rest)) + rest


def test_second_differences_by_hand(tmp_path):
  # x = 0, 10, 30, 40, 40 counts -> d = 0, 10, 10, -10, -10 (second differences), each in
  # the default table; 5000 nV per count -> x * 5e-3 mV; 2000 us -> 500 Hz.
  (tmp_path / "a.SCP").write_bytes(scp_file({"I": [0, 10, 30, 40, 40]}))
  rec = data.open_source(f"scp:{tmp_path}")[0]
  np.testing.assert_allclose(rec["signal"][0], [0, 0.05, 0.15, 0.2, 0.2], atol=1e-7)
  assert rec["fs"] == 500.0 and rec["record_id"] == "a" and rec["patient_id"] == "SCP-7"
  assert list(rec["lead_mask"]) == [1] + [0] * 11


@pytest.mark.parametrize("diff, huffman", [(0, False), (1, True), (2, True), (2, False)])
def test_twelve_leads_round_trip(tmp_path, diff, huffman):
  rng = np.random.default_rng(diff)
  t = np.arange(2500)
  leads = {k: (400 * np.sin(t / (20 + i)) + rng.integers(-30, 30, t.size)).astype(np.int64)
           for i, k in enumerate(leads_lib.LEADS_12)}
  leads["V3R"] = leads["V1"]
  (tmp_path / "r.scp").write_bytes(scp_file(leads, avm=2500, interval=1000, diff=diff,
                                            huffman=huffman))
  src = data.open_source(f"scp:{tmp_path}")
  rec = src[0]
  assert rec["fs"] == 1000.0 and rec["lead_mask"].all()
  for i, k in enumerate(leads_lib.LEADS_12):
    np.testing.assert_allclose(rec["signal"][i], leads[k] * 2.5e-3, rtol=1e-6, atol=1e-7)
  info = src.info(0)
  assert info["left_out_channels"] == ["V3R"] and info["crc_ok"] is True
  assert info["acquisition_date"] == "2021-03-09" and info["acquisition_time"] == "14:05:09"


def test_eight_leads_get_the_limb_leads_derived_and_a_bad_crc_is_reported(tmp_path):
  leads = {k: np.arange(100) * (j + 1) for j, k in enumerate(
      ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6"))}
  raw = bytearray(scp_file(leads))
  raw[0] ^= 0xFF  # the record CRC no longer matches
  (tmp_path / "e.scp").write_bytes(bytes(raw))
  src = data.open_source(f"scp:{tmp_path}")
  rec = src[0]
  x = {k: rec["signal"][leads_lib.LEADS_12.index(k)] for k in leads_lib.LEADS_12}
  np.testing.assert_allclose(x["III"], x["II"] - x["I"], atol=1e-6)
  np.testing.assert_allclose(x["aVF"], (x["II"] + x["III"]) / 2, atol=1e-6)
  info = src.info(0)
  assert sorted(info["derived_leads"]) == ["III", "aVF", "aVL", "aVR"]
  assert info["crc_ok"] is False


@pytest.mark.parametrize("kwargs, message", [
    ({"bimodal": 1}, "bimodal compression"),
    ({"table": 1}, "section 2 ends inside Huffman table 1"),
    ({"flags": 0x05}, "no section 4 or 5"),
    ({"avm": 0}, "amplitude multiplier 0"),
])
def test_what_is_not_decoded_is_a_bad_record_naming_why(tmp_path, kwargs, message):
  (tmp_path / "n.scp").write_bytes(scp_file({"I": np.arange(50)}, **kwargs))
  with pytest.raises(sources.BadRecordError, match=f"n.scp.*{message}"):
    data.open_source(f"scp:{tmp_path}")[0]


def test_truncated_file_and_huffman_data_are_bad_records(tmp_path):
  raw = scp_file({"I": np.arange(400) * 3})
  (tmp_path / "t.scp").write_bytes(raw[: len(raw) - 40])
  with pytest.raises(sources.BadRecordError, match="t.scp: truncated"):
    data.open_source(f"scp:{tmp_path}")[0]


def test_no_scp_file_is_one_error(tmp_path):
  (tmp_path / "x.scp").write_bytes(b"\x00" * 64)
  with pytest.raises(ValueError, match="scp"):
    data.open_source(f"scp:{tmp_path}")


def _beat_case(rng, n=3000, beat_len=400, fiducial=180, qrs=(500, 1300, 2100, 2800)):
  """A rhythm whose beats are one reference beat plus noise; the residual the encoder stores."""
  t = np.arange(beat_len)
  shape = {k: (600 * np.exp(-0.5 * ((t - fiducial) / (6 + i)) ** 2)).astype(np.int64)
           for i, k in enumerate(leads_lib.LEADS_12)}
  rhythm = {k: rng.integers(-20, 20, n) for k in leads_lib.LEADS_12}
  zones = []
  for j, fc in enumerate(qrs):  # sample numbers from 1
    start, end = fc - 60, min(fc + 100, n)
    zones.append((0 if j != 2 else 1, start, fc, end))  # the third QRS is of another type
  residual = {k: v.copy() for k, v in rhythm.items()}
  for kind, start, fc, end in zones:
    s = np.arange(start, end + 1)
    k = s - fc + fiducial - 1
    for lead in leads_lib.LEADS_12:
      rhythm[lead][s - 1] += shape[lead][k]  # what the device recorded
      if kind == 0:
        residual[lead][s - 1] = rhythm[lead][s - 1] - shape[lead][k]  # what it stored
      else:
        residual[lead][s - 1] = rhythm[lead][s - 1]
  return rhythm, residual, shape, zones


@pytest.mark.parametrize("huffman", [True, False])
def test_reference_beat_subtraction_is_undone(tmp_path, huffman):
  rhythm, residual, shape, zones = _beat_case(np.random.default_rng(5))
  (tmp_path / "rb.scp").write_bytes(scp_file(
      residual, flags=0x05, diff=1, huffman=huffman, avm=1000, interval=2000, beat=shape,
      beat_ms=800, fiducial=180, zones=zones))
  rec = data.open_source(f"scp:{tmp_path}")[0]
  assert rec["fs"] == 500.0 and rec["signal"].shape == (12, 3000)
  for i, k in enumerate(leads_lib.LEADS_12):  # 1000 nV per count -> 1e-3 mV
    np.testing.assert_allclose(rec["signal"][i], rhythm[k] * 1e-3, atol=1e-7)
  med = data.open_source(f"scp:{tmp_path}?waveform=median")[0]
  assert med["signal"].shape == (12, 400)  # 800 ms at 2000 us per sample
  np.testing.assert_allclose(med["signal"][1], shape["II"] * 1e-3, atol=1e-7)


def test_reference_beats_with_their_own_multiplier_and_a_mismatched_rate(tmp_path):
  rhythm, residual, shape, zones = _beat_case(np.random.default_rng(6))
  halves = {k: v // 2 for k, v in shape.items()}  # stored at 2000 nV per count: half the counts
  for kind, start, fc, end in zones:
    s = np.arange(start, end + 1)
    for lead in leads_lib.LEADS_12:
      if kind == 0:
        residual[lead][s - 1] = rhythm[lead][s - 1] - 2 * halves[lead][s - fc + 180 - 1]
  kw = dict(flags=0x05, avm=1000, beat=halves, beat_ms=800, fiducial=180, zones=zones,
            avm5=2000)
  (tmp_path / "m.scp").write_bytes(scp_file(residual, **kw))
  rec = data.open_source(f"scp:{tmp_path}")[0]
  np.testing.assert_allclose(rec["signal"][0], rhythm["I"] * 1e-3, atol=1e-7)
  (tmp_path / "m.scp").write_bytes(scp_file(residual, **kw, interval5=1000))
  with pytest.raises(sources.BadRecordError, match="reference beats at 1000 us.*rhythm at 2000"):
    data.open_source(f"scp:{tmp_path}")[0]


def test_own_huffman_tables_decode_like_the_default(tmp_path):
  rng = np.random.default_rng(7)
  leads = {k: rng.integers(-3000, 3000, 800) for k in leads_lib.LEADS_12}
  table = scp.DEFAULT_TABLE  # the default table, but sent in section 2 as the file's own
  (tmp_path / "own.scp").write_bytes(scp_file(
      leads, diff=0, huffman=lambda v: huffman_own(v, table), sec2=tables_section([table])))
  (tmp_path / "dflt.scp").write_bytes(scp_file(leads, diff=0))
  src = data.open_source(f"scp:{tmp_path}")
  a, b = src[0], src[1]
  np.testing.assert_array_equal(a["signal"], b["signal"])
  np.testing.assert_allclose(a["signal"][3], leads["aVR"] * 5e-3, rtol=1e-6)


def test_an_own_table_with_a_table_switch(tmp_path):
  # Table 1: 0 = "0", 1 = "10", "11" switches to table 2. Table 2: "0" + 12-bit value,
  # "1" switches back. Base codes hold the first bit lowest: "10" -> 0b01, "11" -> 0b11.
  t1 = ((1, 1, 1, 0, 0b0), (2, 2, 1, 1, 0b01), (2, 2, 0, 2, 0b11))
  t2 = ((1, 13, 1, 0, 0b0), (1, 1, 0, 1, 0b1))
  # 0, 1, then -700 in table 2, back to table 1, 1, 0.
  bits = "0" + "10" + "11" + "0" + format(-700 & 0xFFF, "012b") + "1" + "10" + "0"
  bits += "0" * (-len(bits) % 8)
  payload = bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))
  (tmp_path / "sw.scp").write_bytes(scp_file(
      {"II": np.zeros(6, np.int64)}, diff=0, huffman=lambda v: payload,
      sec2=tables_section([t1, t2])))
  rec = data.open_source(f"scp:{tmp_path}")[0]
  np.testing.assert_allclose(rec["signal"][1], np.array([0, 1, -700, 1, 0, 0]) * 5e-3,
                             atol=1e-7)  # the last 0: the zero bits that pad the byte


def test_a_stream_no_code_matches_is_named(tmp_path):
  t1 = ((2, 2, 1, 0, 0b00), (2, 2, 1, 1, 0b01))  # codes "00" and "10" only: "11" matches none
  (tmp_path / "x.scp").write_bytes(scp_file(
      {"I": np.zeros(4, np.int64)}, diff=0, huffman=lambda v: b"\xff",
      sec2=tables_section([t1])))
  with pytest.raises(sources.BadRecordError, match="x.scp: lead I: no code of Huffman table 1"):
    data.open_source(f"scp:{tmp_path}")[0]


def test_a_long_recording_past_32767_samples_per_lead(tmp_path):
  # Holter-length leads: sample numbers are 4-byte fields, nothing may wrap at 2^15.
  rng = np.random.default_rng(8)
  x = np.cumsum(rng.integers(-3, 4, 40000))
  (tmp_path / "long.scp").write_bytes(scp_file({"I": x, "II": -x}, diff=1))
  rec = data.open_source(f"scp:{tmp_path}")[0]
  assert rec["signal"].shape == (12, 40000)
  np.testing.assert_allclose(rec["signal"][1], -x * 5e-3, atol=1e-6)


def test_a_left_out_lead_is_stepped_over_undecoded(tmp_path):
  # V3R's bytes are not a valid stream (empty), but it is left out: the record still reads.
  x = np.arange(60) % 7
  enc = lambda v: b"" if (v == 7777).all() else huffman_default(v)
  (tmp_path / "v3r.scp").write_bytes(scp_file(
      {"I": x, "V3R": np.full(60, 7777)}, diff=0, huffman=enc))
  src = data.open_source(f"scp:{tmp_path}")
  np.testing.assert_allclose(src[0]["signal"][0], x * 5e-3, atol=1e-7)
  assert src.info(0)["left_out_channels"] == ["V3R"]
