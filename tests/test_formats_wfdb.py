"""WFDB header parsing, signal decoding (16, 212, ...), and the `wfdb:DIR` source."""

import os
import pickle

import numpy as np
import pytest

from ecgjax import data
from ecgjax import leads as leads_lib
from ecgjax.data import wfdb_io
from tests import format_fixtures as ff


def test_parse_header_fields_and_defaults():
  h = wfdb_io.parse_header(
      "# leading comment\n"
      "rec 4 500/1000(0) 1000 12:00:00 01/01/2000\n"
      "rec.dat 16 200/mV 16 0 5 123 0 I\n"
      "rec.dat 16 1000.0(-3)/uV 16 7 0 0 0 lead II\n"
      "rec.dat 16+512\n"
      "rec.dat 212 0(2)\n"
      "# Age: 74\n#Sex: Male\n# Dx: 164889003,59118001\n", "x.hea")
  assert (h.record_name, h.n_sig, h.fs, h.n_samples) == ("rec", 4, 500.0, 1000)
  a, b, c, d = h.signals
  assert (a.gain, a.baseline, a.units, a.checksum, a.description) == (200.0, 0, "mV", 123, "I")
  # Baseline in parentheses wins over ADC zero; the description may hold spaces.
  assert (b.gain, b.baseline, b.units, b.adc_zero, b.description) == (
      1000.0, -3, "uV", 7, "lead II")
  # Missing gain or a gain of 0 means WFDB's default of 200 ADC units per mV.
  assert (c.fmt, c.byte_offset, c.gain, c.units) == (16, 512, 200.0, "mV")
  assert (d.fmt, d.gain, d.baseline) == (212, 200.0, 2)
  assert h.info() == {"age": "74", "sex": "Male", "dx": "164889003,59118001"}
  # A header without rate or length: both unknown, never guessed.
  h = wfdb_io.parse_header("r 1\nr.dat 16\n")
  assert h.fs is None and h.n_samples is None


@pytest.mark.parametrize("text,match", [
    ("", "no record line"),
    ("rec\n", "no signal count"),
    ("rec 12 500 100\nrec.dat 16 200/mV 16 0 0 0 0 I\n", "12 signals but 1"),
    ("rec 1 fast 100\nrec.dat 16\n", "sampling rate"),
    ("rec 1 500 100\nrec.dat sixteen\n", "format field"),
    ("rec 1 500 100\nrec.dat 16 abc/mV\n", "gain field"),
    ("rec/3 2 500 100\n", "multi-segment"),
])
def test_unparseable_headers_name_the_file(text, match):
  with pytest.raises(wfdb_io.WfdbError, match=match) as e:
    wfdb_io.parse_header(text, "/d/rec.hea")
  assert "/d/rec.hea" in str(e.value)


def test_format_212_hand_computed_bytes():
  # 1 -> 0x001, -1 -> 0xFFF share the middle byte's nibbles (low: first sample).
  raw = bytes([0x01, 0xF0, 0xFF, 0xFF, 0x87, 0x01])
  np.testing.assert_array_equal(wfdb_io.decode(raw, 212, 4), [1, -1, 2047, -2047])
  assert ff.encode(np.array([[1, 2047], [-1, -2047]]), 212) == raw
  # An odd count: the last sample sits alone in 2 bytes.
  np.testing.assert_array_equal(wfdb_io.decode(bytes([0x05, 0x08]), 212, 1), [-2043])


@pytest.mark.parametrize("fmt", [16, 61, 80, 160, 212, 24, 32])
def test_dat_formats_round_trip(tmp_path, fmt):
  lo, hi = {80: (-127, 127), 212: (-2047, 2047)}.get(fmt, (-30000, 30000))
  # 3 signals x 101 samples: an odd sample count exercises 212's tail.
  digital = ff.random_digital(3, 101, seed=fmt, lo=lo, hi=hi)
  hea = ff.write_wfdb(tmp_path, "r", digital, fmt=fmt, gain="100(10)/mV",
                      leads=("I", "II", "V1"))
  out = wfdb_io.read_signals(wfdb_io.read_header(hea))
  np.testing.assert_allclose(out, (digital - 10) / 100.0, rtol=1e-6, atol=1e-6)


def test_units_become_millivolts(tmp_path):
  digital = ff.random_digital(2, 50)
  hea = ff.write_wfdb(tmp_path, "u", digital, gain="2(0)/uV", leads=("I", "II"))
  out = wfdb_io.read_signals(wfdb_io.read_header(hea))
  np.testing.assert_allclose(out, digital / 2.0 / 1000.0, rtol=1e-6)


def test_format16_matches_real_ptbxl(shared_dir):
  root = shared_dir / "data" / "ptbxl"
  for rel, n in (("records500/00000/00001_hr", 5000), ("records100/00000/00002_lr", 1000)):
    header = wfdb_io.read_header(str(root / (rel + ".hea")))
    # read_signals verifies every lead's checksum against the decoded samples.
    out = wfdb_io.read_signals(header)
    raw = np.fromfile(str(root / (rel + ".dat")), "<i2").reshape(n, 12).T
    np.testing.assert_array_equal(out, (raw / np.float32(1000.0)).astype(np.float32))
    assert header.lead_names[3] == "AVR" and header.fs in (100.0, 500.0)


@pytest.fixture
def wfdb_dir(tmp_path):
  """A folder with a format-16, a format-212, a challenge .mat and a MIMIC record."""
  root = tmp_path / "wfdb"
  ff.write_wfdb(root / "a", "r16", ff.random_digital(12, 500, seed=1), fmt=16)
  ff.write_wfdb(root / "a", "r212", ff.random_digital(12, 401, seed=2, lo=-2047, hi=2047),
                fmt=212, fs=250)
  ff.write_wfdb(root / "g1", "A0001", ff.random_digital(12, 300, seed=3), ext="mat",
                gain="1000/mV",
                comments=("Age: 74", "Sex: Male", "Dx: 164889003,59118001", "Rx: Unknown"))
  mimic_leads = ("I", "II", "III", "aVR", "aVF", "aVL", "V1", "V2", "V3", "V4", "V5", "V6")
  ff.write_wfdb(root / "files" / "p1000" / "p10000032" / "s40689238", "40689238",
                ff.random_digital(12, 200, seed=4), leads=mimic_leads)
  return root


def test_wfdb_source_reads_every_kind(wfdb_dir):
  src = data.open_source(f"wfdb:{wfdb_dir}?labels=none")
  assert len(src) == 4 and src.label_names == () and src.fs is None
  meta = src.metadata()
  assert list(meta["record_id"]) == [
      "a/r16", "a/r212", "files/p1000/p10000032/s40689238/40689238", "g1/A0001"]
  assert list(meta["patient_id"]) == ["a/r16", "a/r212", "10000032", "g1/A0001"]
  for i in range(len(src)):
    rec = src[i]
    assert rec["signal"].dtype == np.float32 and rec["signal"].shape[0] == 12
    assert rec["leads"] == leads_lib.LEADS_12 and "lead_mask" not in rec
    assert rec["record_id"] == meta["record_id"][i]
    assert rec["patient_id"] == meta["patient_id"][i]
  assert src[1]["fs"] == 250.0 and src[1]["signal"].shape == (12, 401)
  # MIMIC writes aVF before aVL: rows come back in canonical order, not shifted.
  digital = ff.random_digital(12, 200, seed=4)
  got = src[2]["signal"]
  np.testing.assert_allclose(got[4], digital[5] / 200.0, rtol=1e-6)  # aVL
  np.testing.assert_allclose(got[5], digital[4] / 200.0, rtol=1e-6)  # aVF
  mat = ff.random_digital(12, 300, seed=3)
  np.testing.assert_allclose(src[3]["signal"], mat / 1000.0, rtol=1e-6)
  # Sources cross process boundaries in grain workers.
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(clone[0]["signal"], src[0]["signal"])


def test_challenge_dx_labels(tmp_path):
  root = tmp_path / "challenge"
  ff.write_wfdb(root, "A0001", ff.random_digital(12, 100, seed=1), ext="mat",
                comments=("Age: 74", "Sex: Male", "Dx: 164889003,59118001"))
  ff.write_wfdb(root, "A0002", ff.random_digital(12, 120, seed=2), ext="mat",
                comments=("Age: NaN", "Dx: 426783006", "Patient: P7"))
  src = data.open_source(str(root))  # auto -> wfdb; labels auto -> dx
  assert type(src).__name__ == "WfdbSource"
  assert src.label_names == ("59118001", "164889003", "426783006")  # numeric order
  assert src.fs == 500.0  # every header read at open agrees
  meta = src.metadata()
  np.testing.assert_array_equal(meta["labels"], [[1, 1, 0], [0, 0, 1]])
  assert list(meta["patient_id"]) == ["A0001", "P7"]
  for i in range(2):
    np.testing.assert_array_equal(src[i]["labels"], meta["labels"][i])
    assert src[i]["patient_id"] == meta["patient_id"][i]
  ff.write_wfdb(tmp_path / "noDx", "r", ff.random_digital(12, 10))
  assert data.open_source(str(tmp_path / "noDx")).label_names == ()
  with pytest.raises(ValueError, match="no header .* '# Dx:'"):
    data.open_source(f"wfdb:{tmp_path / 'noDx'}?labels=dx")


def test_missing_leads_are_zeros_with_mask(tmp_path):
  digital = ff.random_digital(3, 100)
  ff.write_wfdb(tmp_path, "three", digital, leads=("II", "V1", "RESP"))
  rec = data.open_source(f"wfdb:{tmp_path}")[0]
  np.testing.assert_array_equal(rec["lead_mask"], [0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(rec["signal"][1], digital[0] / 200.0, rtol=1e-6)
  np.testing.assert_allclose(rec["signal"][6], digital[1] / 200.0, rtol=1e-6)
  assert not rec["signal"][[0, 2, 3, 4, 5, 7, 8, 9, 10, 11]].any()


def _bad(tmp_path, name, **kwargs):
  """Writes one record and returns the error its source raises when read."""
  root = tmp_path / name
  digital = kwargs.pop("digital", ff.random_digital(12, 100))
  hea = ff.write_wfdb(root, name, digital, **kwargs)
  src = data.open_source(f"wfdb:{root}?labels=none")
  with pytest.raises(data.BadRecordError) as e:
    src[0]
  assert e.value.record_id == name
  return str(e.value), hea


def test_bad_records_name_file_and_problem(tmp_path):
  msg, hea = _bad(tmp_path, "trunc", n_samples=200)
  assert "truncated signal file" in msg and "trunc.dat" in msg
  # A header claiming 12 leads over a file of 8.
  msg, _ = _bad(tmp_path, "eight", n_sig=12, digital=ff.random_digital(12, 100),
                data=ff.random_digital(8, 100))
  assert "truncated" in msg and "12 signals" in msg and "eight.dat" in msg
  msg, _ = _bad(tmp_path, "eightmat", ext="mat", data=ff.random_digital(8, 100))
  assert "12 signals" in msg and "(8, 100)" in msg and "eightmat.mat" in msg
  nan = ff.random_digital(12, 100).astype(np.float64)
  nan[3, 10] = np.nan
  msg, _ = _bad(tmp_path, "nan", ext="mat", digital=nan)
  assert "NaN" in msg and "'aVR'" in msg and "nan.mat" in msg
  msg, _ = _bad(tmp_path, "empty", digital=np.zeros((12, 0), np.int64))
  assert "zero-length" in msg and "empty.hea" in msg
  msg, _ = _bad(tmp_path, "fmt", fmt=311)
  assert "format 311" in msg and "not supported" in msg
  msg, _ = _bad(tmp_path, "norate", fs=None)
  assert "norate.hea" in msg and "fs=" in msg
  msg, _ = _bad(tmp_path, "sentinel", digital=np.full((12, 100), -32768))
  assert "missing-value" in msg
  # Corrupt bytes: the header's checksum no longer matches.
  msg, hea = _bad(tmp_path, "flip", data=ff.random_digital(12, 100, seed=9))
  assert "checksum mismatch" in msg and "flip.dat" in msg
  assert data.open_source(f"wfdb:{os.path.dirname(hea)}?checksum=0")[0]["signal"].shape == (
      12, 100)


def test_missing_dat_and_unparseable_header(tmp_path):
  hea = ff.write_wfdb(tmp_path, "gone", ff.random_digital(12, 10))
  os.remove(hea[:-4] + ".dat")
  with open(tmp_path / "broken.hea", "w") as f:
    f.write("broken twelve\n")
  src = data.open_source(f"wfdb:{tmp_path}")
  with pytest.raises(data.BadRecordError, match=r"broken\.hea.*signal count"):
    src[0]
  with pytest.raises(data.BadRecordError, match=r"missing signal file .*gone\.dat"):
    src[1]


def test_fs_option_only_fills_missing_rates(tmp_path):
  ff.write_wfdb(tmp_path, "a", ff.random_digital(12, 10), fs=None)
  ff.write_wfdb(tmp_path, "b", ff.random_digital(12, 10), fs=360)
  src = data.open_source(f"wfdb:{tmp_path}?fs=250")
  assert src[0]["fs"] == 250.0 and src[1]["fs"] == 360.0


def test_open_errors(tmp_path):
  with pytest.raises(ValueError, match="no such (file or )?directory .*nowhere"):
    data.open_source(f"wfdb:{tmp_path / 'nowhere'}")
  with pytest.raises(ValueError, match=r"no \.hea header files"):
    data.open_source(f"wfdb:{tmp_path}")
  with pytest.raises(ValueError, match="labels"):
    data.open_source(f"wfdb:{tmp_path}?labels=snomed")
