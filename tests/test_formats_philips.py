"""Philips XML: XLI and plain waveforms, the limb-lead residuals, units, encodings, a real
XLI chunk, and bad files named."""

import base64
import re

import numpy as np
import pytest

from ecgjax import data
from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data.formats import philips

pytest.importorskip("sierraecg")

LEADS = leads_lib.LEADS_12

# One lead's XLI chunk from a real HeartStart MRx export (129DYPRG.xml, a test fixture of
# sixlettervariables/sierra-ecg-tools, MIT licence, (c) 2022 Christopher Watford): the
# stored residual of a limb lead, 11 s at 500 Hz, all zero but for the 200 ms, 200-count
# (1 mV at 5 uV per count) calibration pulse at samples 5350-5449.
REAL_CHUNK = (
    "FAEAAAEAAAAAEAQFAkDQRBUGQdCEJQpC0MQ1DkPRBEUSRNFEVRZF0YRlGkbRxHUeR9IEhSJI0kSVJknShKUqStLE"
    "tS5L0wTFMkzTRNU2TdOE5TpO08T1Pk/UBQVCUNRFFUZR1IUlSlLUxTVOU9UFRVJU1UVVVlXVhWVaVtXFdV5X1gWF"
    "YljWRXj/AFYABP9MRAW1blvXBcVyXNdF1XZd14Xlel7XxfV+X9gGBYJg2EYVhmHYhiWKYtjGNY5j2QZFkmTZRlWW"
    "ZdmGZZpm2cZ1nmfaBoWiaNpGlaZp2oalqmraxrWua9sGxbJs20bVtm3bhuW6btvG9b5v3AcFwnDcRxXGcdyHJcpy"
    "3Mc1znPdB0XJHgCHNAgeGbAD/wA=")


def _lzw10(data: bytes) -> bytes:
  """LZW with fixed 10-bit codes, MSB first, dictionary from 256 (the XLI variant)."""
  table = {bytes([i]): i for i in range(256)}
  nxt, w, codes = 256, b"", []
  for byte in data:
    wc = w + bytes([byte])
    if wc in table:
      w = wc
      continue
    codes.append(table[w])
    if nxt <= 1022:
      table[wc], nxt = nxt, nxt + 1
    w = bytes([byte])
  if w:
    codes.append(table[w])
  bits = "".join(f"{c:010b}" for c in codes)
  bits += "0" * (-len(bits) % 8)
  return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def xli_chunk(samples: np.ndarray) -> bytes:
  """One lead as XLI: second-order deltas (the decoder's inverse), high bytes then low
  bytes, LZW, behind the 8-byte header (size, 2 unused bytes, seed)."""
  s = np.asarray(samples, np.int64)
  d = np.full(s.size, 64, np.int64)
  d[0], d[1] = s[0], s[1]
  seed = 2 * s[1] - s[0] - s[2]
  d[2:-1] = 2 * s[2:-1] - s[1:-2] - s[3:] + 64
  d16 = d.astype("<i2").view(np.uint16)
  payload = _lzw10(bytes((d16 >> 8).astype(np.uint8)) + bytes((d16 & 0xFF).astype(np.uint8)))
  header = (len(payload).to_bytes(4, "little", signed=True) + b"\x00\x00"
            + int(seed).to_bytes(2, "little", signed=True))
  return header + payload


def _doc(parsed, *, version="1.04", reps="", patient="PT-9", fs_in_parsed=True,
         encoding_decl="UTF-8"):
  sig = ("" if fs_in_parsed else
         "<signalcharacteristics><samplingrate>500</samplingrate>"
         "<signalresolution>5</signalresolution></signalcharacteristics>")
  return (f'<?xml version="1.0" encoding="{encoding_decl}"?>\n'
          '<restingecgdata xmlns="http://www3.medical.philips.com">'
          f"<documentinfo><documenttype>PhilipsECG</documenttype><documentversion>{version}"
          "</documentversion></documentinfo>"
          f'<dataacquisition date="2011-12-01" time="07:27:34"><machine>PageWriter TC70</machine>'
          f"{sig}</dataacquisition>"
          f"<patient><generalpatientdata><patientid>{patient}</patientid></generalpatientdata>"
          "</patient><interpretations><interpretation><statement><leftstatement>Sinus rhythm"
          "</leftstatement><rightstatement>Normal ECG</rightstatement></statement>"
          f"</interpretation></interpretations><waveforms>{parsed}{reps}</waveforms>"
          "</restingecgdata>")


def _parsed(payload: bytes, labels, n, fs=500, compress="XLI", res="5", extra=""):
  attrs = (f'dataencoding="Base64" compressflag="True" compressmethod="{compress}" '
           if compress else 'dataencoding="Base64" ')
  return (f'<parsedwaveforms {attrs}numberofleads="{len(labels)}" '
          f'leadlabels="{" ".join(labels)}" durationperchannel="{n * 1000 // fs}" '
          f'samplespersecond="{fs}" resolution="{res}" {extra}>'
          f"{base64.b64encode(payload).decode()}</parsedwaveforms>")


def _leads_and_residuals(rng, n):
  true = {k: rng.integers(-300, 300, n) for k in ("I", "II", "V1", "V2", "V3", "V4", "V5",
                                                   "V6")}
  res = {k: rng.integers(-3, 4, n) for k in ("III", "aVR", "aVL", "aVF")}
  return true, res


def test_xli_by_hand_with_residual_limb_leads(tmp_path):
  # Five samples, hand-checked: I = 10, II = 30; residuals 2, 1, 0, -1 give
  # III = 30 - 10 - 2 = 18, aVR = -1 - 20 = -21, aVL = floor(-8 / 2) - 0 = -4,
  # aVF = floor(48 / 2) + 1 = 25 (counts of 5 uV).
  n = 6
  stored = {"I": [10] * n, "II": [30] * n, "III": [2] * n, "aVR": [1] * n, "aVL": [0] * n,
            "aVF": [-1] * n}
  stored.update({f"V{i}": [i] * n for i in range(1, 7)})
  payload = b"".join(xli_chunk(np.array(stored[k])) for k in LEADS)
  (tmp_path / "e.XML").write_text(_doc(_parsed(payload, LEADS, n)), encoding="utf-8")
  rec = data.open_source(f"philips:{tmp_path}")[0]
  want = {"I": 10, "II": 30, "III": 18, "aVR": -21, "aVL": -4, "aVF": 25,
          **{f"V{i}": i for i in range(1, 7)}}
  for k, v in want.items():
    np.testing.assert_allclose(rec["signal"][LEADS.index(k)], v * 5e-3, rtol=1e-6)
  assert rec["lead_mask"].all() and rec["fs"] == 500.0 and rec["patient_id"] == "PT-9"


def test_xli_random_leads_round_trip_and_metadata(tmp_path):
  rng = np.random.default_rng(3)
  n = 1000
  true, res = _leads_and_residuals(rng, n)
  stored = {**true, **res}
  payload = b"".join(xli_chunk(stored[k]) for k in LEADS)
  (tmp_path / "r.xml").write_text(_doc(_parsed(payload, LEADS, n, res="4.88")), "utf-8")
  src = data.open_source(f"philips:{tmp_path}")
  rec = src[0]
  i, ii = true["I"], true["II"]
  iii = ii - i - res["III"]
  want = {**true, "III": iii, "aVR": -res["aVR"] - np.floor_divide(i + ii, 2),
          "aVL": np.floor_divide(i - iii, 2) - res["aVL"],
          "aVF": np.floor_divide(ii + iii, 2) - res["aVF"]}
  for k, v in want.items():
    np.testing.assert_allclose(rec["signal"][LEADS.index(k)], v * 4.88e-3, rtol=1e-6,
                               atol=1e-7)
  info = src.info(0)
  assert info["statements"] == ["Sinus rhythm", "Normal ECG"]
  assert info["acquisition_date"] == "2011-12-01" and info["machine"] == "PageWriter TC70"
  assert info["compression"] == "XLI" and info["document_version"] == "1.04"


def test_real_xli_chunk_decodes_to_its_calibration_pulse(tmp_path):
  chunk = base64.b64decode(REAL_CHUNK)
  n = 5500
  labels = ["I", "II", "III", "aVR", "aVL", "aVF"]
  (tmp_path / "real.xml").write_text(
      _doc(_parsed(chunk * 6, labels, n, extra='compression="XLI"'), version="1.03"), "utf-8")
  rec = data.open_source(f"philips:{tmp_path}")[0]
  p = np.zeros(n)
  p[5350:5450] = 1.0  # 200 counts x 5 uV
  # Every stored stream is the pulse p: I = II = p, III = p - p - p = -p,
  # aVR = -p - p = -2p, aVL = floor((p + p) / 2) - p = 0, aVF = floor(0) - p = -p.
  want = {"I": p, "II": p, "III": -p, "aVR": -2 * p, "aVL": 0 * p, "aVF": -p}
  for k, v in want.items():
    np.testing.assert_allclose(rec["signal"][LEADS.index(k)], v, atol=1e-6)
  assert rec["signal"].shape == (12, n)
  assert list(rec["lead_mask"]) == [1] * 6 + [0] * 6


def test_plain_waveform_utf16_without_bom_and_1_03_rate(tmp_path):
  rng = np.random.default_rng(1)
  n = 500
  counts = rng.integers(-1000, 1000, (12, n))
  parsed = _parsed(counts.astype("<i2").tobytes(), LEADS, n, compress="")
  parsed = parsed.replace('samplespersecond="500" resolution="5" ', "")
  doc = _doc(parsed, version="1.03", fs_in_parsed=False, encoding_decl="UTF-16")
  (tmp_path / "le.xml").write_bytes(doc.encode("utf-16-le"))  # no byte-order mark
  (tmp_path / "be.ecg").write_bytes(doc.encode("utf-16-be"))
  src = data.open_source(f"philips:{tmp_path}")
  assert len(src) == 2
  for i in range(2):  # plain data: stored leads as they are, no residual arithmetic
    np.testing.assert_allclose(src[i]["signal"], counts * 5e-3, rtol=1e-6)
  assert data.open_source(f"auto:{tmp_path}").__class__.__name__ == "PhilipsSource"


def test_median_waveform_from_repbeats(tmp_path):
  rng = np.random.default_rng(2)
  beats = {k: rng.integers(-500, 500, 600) for k in LEADS}
  reps = ('<repbeats dataencoding="Base64" samplespersec="500" resolution="5">'
          + "".join(f'<repbeat leadname="{k}"><waveform duration="1200">'
                    f'{base64.b64encode(v.astype("<i2").tobytes()).decode()}</waveform>'
                    "</repbeat>" for k, v in beats.items()) + "</repbeats>")
  payload = b"".join(xli_chunk(np.zeros(10, np.int64)) for _ in LEADS)
  (tmp_path / "m.xml").write_text(_doc(_parsed(payload, LEADS, 10), reps=reps), "utf-8")
  rec = data.open_source(f"philips:{tmp_path}?waveform=median")[0]
  assert rec["signal"].shape == (12, 600)
  for k, v in beats.items():
    np.testing.assert_allclose(rec["signal"][LEADS.index(k)], v * 5e-3, rtol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.replace("</restingecgdata>", ""), "malformed XML"),
    (lambda d: d.replace("<parsedwaveforms", "<otherwaveforms").replace(
        "</parsedwaveforms>", "</otherwaveforms>"), "no <parsedwaveforms>"),
    (lambda d: d.replace('compressmethod="XLI"', 'compressmethod="ZIP"'), "compression"),
    (lambda d: d.replace('samplespersecond="500"', 'samplespersecond="fast"'), "sampling rate"),
    (lambda d: d.replace('durationperchannel="2"', 'durationperchannel="4000"'), "shorter"),
    (lambda d: re.sub(r"(<parsedwaveforms[^>]*>)[^<]*", r"\1@@@@", d), "not base64"),
])
def test_bad_files_are_bad_records_naming_the_file(tmp_path, mutate, message):
  chunk = xli_chunk(np.arange(10))
  doc = _doc(_parsed(chunk * 12, LEADS, 1))
  doc = doc.replace('durationperchannel="1"', 'durationperchannel="2"')
  good = tmp_path / "good.xml"
  good.write_text(doc, "utf-8")
  assert data.open_source(f"philips:{good}")[0]["signal"].shape == (12, 1)
  bad = tmp_path / "bad.xml"
  bad.write_text(mutate(doc), "utf-8")
  src = philips.PhilipsSource(str(bad), "rhythm")
  with pytest.raises(sources.BadRecordError, match=message) as e:
    src[0]
  assert "bad.xml" in str(e.value)


def test_corrupt_xli_stream_is_a_bad_record(tmp_path):
  chunk = bytearray(xli_chunk(np.arange(100)))
  chunk[0:4] = (10_000).to_bytes(4, "little")  # a size beyond the data
  (tmp_path / "c.xml").write_text(_doc(_parsed(bytes(chunk), ["I"], 100)), "utf-8")
  with pytest.raises(sources.BadRecordError, match="c.xml.*chunk of lead I claims 10000"):
    data.open_source(f"philips:{tmp_path}")[0]
  whole = xli_chunk(np.arange(100))
  (tmp_path / "c.xml").write_text(_doc(_parsed(whole * 2, ["I", "II"], 200)), "utf-8")
  with pytest.raises(sources.BadRecordError, match="shorter than .* 200 samples: I 100"):
    data.open_source(f"philips:{tmp_path}")[0]


def test_no_philips_file_is_one_error(tmp_path):
  (tmp_path / "x.xml").write_text("<RestingECG/>")
  with pytest.raises(ValueError, match="philips"):
    data.open_source(f"philips:{tmp_path}")


def test_prepare_and_inspect_count_the_good(tmp_path):
  from ecgjax.data import inspect as inspect_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  n = 1000
  raw = tmp_path / "raw"
  raw.mkdir()
  for name in ("a", "b"):
    true, res = _leads_and_residuals(rng, n)
    payload = b"".join(xli_chunk({**true, **res}[k]) for k in LEADS)
    (raw / f"{name}.xml").write_text(_doc(_parsed(payload, LEADS, n), patient=f"P-{name}"),
                                     "utf-8")
  (raw / "c.xml").write_text(_doc("<parsedwaveforms/>"), "utf-8")  # no data: a bad record
  summary = inspect_lib.inspect_source(f"philips:{raw}", workers=0, progress=False)
  assert summary["records"] == 2 and summary["bad_count"] == 1
  assert "c.xml" in summary["bad"][0]["reason"]
  pp = data.Preprocessing(fs=250.0, samples=500, bandpass=(0.67, 40.0))
  meta = prepare_lib.prepare(f"philips:{raw}", str(tmp_path / "prep"), pp, workers=0,
                             progress=False)
  src = data.open_source(f"prepared:{tmp_path / 'prep'}")
  assert len(src) == 2 and meta["counts"]["bad"] == 1
  assert "c.xml" in meta["bad_records"][0]["reason"]
  assert sorted(src[i]["patient_id"] for i in range(2)) == ["P-a", "P-b"]
  assert src[0]["signal"].shape == (12, 500)
