"""SCP-ECG: sections, the default Huffman table, difference coding, units, and what is not
decoded yet named as bad records (files written by the test's own SCP writer)."""

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


def scp_file(leads: dict, *, avm=5000, interval=2000, diff=2, huffman=True, flags=0x04,
             bimodal=0, patient="SCP-7", table=19999) -> bytes:
  """An SCP-ECG record: sections 0, 1, (2), 3 and 6."""
  names = list(leads)
  n = len(next(iter(leads.values())))
  tags = (struct.pack("<BH", 2, len(patient) + 1) + patient.encode() + b"\x00"
          + struct.pack("<BHHBB", 25, 4, 2021, 3, 9) + struct.pack("<BHBBB", 26, 3, 14, 5, 9)
          + struct.pack("<BH", 255, 0))
  sec3 = struct.pack("<BB", len(names), flags) + b"".join(
      struct.pack("<IIB", 1, n, CODES[k]) for k in names)
  coded = [huffman_default(_diff(v, diff)) if huffman else
           _diff(v, diff).astype("<i2").tobytes() for v in leads.values()]
  sec6 = (struct.pack("<HHBB", avm, interval, diff, bimodal)
          + struct.pack(f"<{len(names)}H", *map(len, coded)) + b"".join(coded))
  bodies = {1: tags, 3: sec3, 6: sec6}
  if huffman:
    bodies[2] = struct.pack("<H", table)
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
    ({"flags": 0x05}, "reference-beat subtraction"),
    ({"bimodal": 1}, "bimodal compression"),
    ({"table": 1}, "own Huffman tables"),
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
