"""Hospital-format readers on real files from other vendors' exports (SPEC section 14).

- DICOM: pydicom's own sample `waveform_ecg.dcm` (a Mortara ELI250 12-lead ECG, rhythm and
  median groups), read whole; the values must equal pydicom's own scaling and obey Einthoven and
  Goldberger within the device's rounding, which only a right lead assignment does.
- MUSE: the median beats of a real MUSE 9 export (tests/real_muse_median.py), each lead's
  base64 as stored and checked by the file's own CRC-32.
- aECG: an excerpt of the HL7 ballot sample distributed by the FDA (tests/real_aecg_excerpt.py)
  in the file's own layout, the representative beats nested inside the rhythm series.
"""

import base64
import zlib

import numpy as np
import pytest

from ecgjax import data
from ecgjax import leads as leads_lib
from ecgjax.data import sources

from tests import real_aecg_excerpt as aecg_real
from tests import real_muse_median as muse_real

L12 = leads_lib.LEADS_12


def _lead(rec, name):
  return rec["signal"][L12.index(name)]


# ---------------------------------------------------------------------------------------- DICOM
def _pydicom_sample():
  pydicom = pytest.importorskip("pydicom")
  from pydicom.data import get_testdata_file
  path = get_testdata_file("waveform_ecg.dcm", download=False)
  if path is None:
    pytest.skip("pydicom's waveform_ecg.dcm sample is not installed")
  return pydicom, path


def test_dicom_real_mortara_file_matches_pydicom_and_einthoven(tmp_path):
  pydicom, path = _pydicom_sample()
  (tmp_path / "ECG0001").write_bytes(open(path, "rb").read())  # no extension: found by content
  src = data.open_source(str(tmp_path))
  rec = src[0]
  ds = pydicom.dcmread(path)
  assert rec["fs"] == 1000.0 and rec["signal"].shape == (12, 10000)
  assert rec["lead_mask"].all() and rec["patient_id"] == str(ds.PatientID)
  # pydicom's own scaling (stored x sensitivity x correction + baseline, in uV) -> mV.
  ref = ds.waveform_array(0).T.astype(np.float64) * 1e-3
  names = [c.ChannelSourceSequence[0].CodeMeaning for c in
           ds.WaveformSequence[0].ChannelDefinitionSequence]
  assert names[:3] == ["Lead I (Einthoven)", "Lead II", "Lead III"]
  order = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]
  for k, name in enumerate(order):
    np.testing.assert_allclose(_lead(rec, name), ref[k], rtol=1e-6, atol=1e-9)
  # By hand: 1.25 uV per count, so one count is 0.00125 mV.
  stored = np.frombuffer(ds.WaveformSequence[0].WaveformData, "<i2").reshape(10000, 12)
  assert _lead(rec, "II")[1234] == pytest.approx(stored[1234, 1] * 1.25e-3)
  # The device stored all 12 leads; on a real recording they obey Einthoven and Goldberger
  # within its rounding (a few counts), which only holds if each channel got its right lead.
  count = 1.25e-3
  i, ii, iii = _lead(rec, "I"), _lead(rec, "II"), _lead(rec, "III")
  assert np.abs(ii - i - iii).max() <= 3 * count
  assert np.abs(_lead(rec, "aVR") + (i + ii) / 2).max() <= 3 * count
  assert np.abs(_lead(rec, "aVL") - (i - iii) / 2).max() <= 3 * count
  assert np.abs(_lead(rec, "aVF") - (ii + iii) / 2).max() <= 3 * count
  assert np.ptp(ii) > 0.5  # a real QRS, not silence: over 0.5 mV peak to peak in lead II
  assert src.info(0)["derived_leads"] == []  # all 12 were stored, none derived

  med = data.open_source(f"dicom:{tmp_path}?waveform=median")[0]
  assert med["signal"].shape == (12, 1200) and med["fs"] == 1000.0
  np.testing.assert_allclose(med["signal"][0], ds.waveform_array(1)[:, 0] * 1e-3, rtol=1e-6)


# ----------------------------------------------------------------------------------------- MUSE
def _muse_file(leads=muse_real.LEADS):
  parts = []
  for name, crc, b64 in leads:
    parts.append(
        "<LeadData><LeadByteCountTotal>1200</LeadByteCountTotal>"
        f"<LeadSampleCountTotal>{muse_real.SAMPLES}</LeadSampleCountTotal>"
        f"<LeadAmplitudeUnitsPerBit>{muse_real.UNITS_PER_BIT}</LeadAmplitudeUnitsPerBit>"
        "<LeadAmplitudeUnits>MICROVOLTS</LeadAmplitudeUnits>"
        f"<LeadID>{name}</LeadID><FirstSampleBaseline>0</FirstSampleBaseline>"
        f"<LeadSampleSize>2</LeadSampleSize><LeadDataCRC32>{crc}</LeadDataCRC32>"
        f"<WaveFormData>{b64}</WaveFormData></LeadData>")
  return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
          '<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n<RestingECG>'
          f"<MuseInfo><MuseVersion>{muse_real.MUSE_VERSION}</MuseVersion></MuseInfo>"
          "<Waveform><WaveformType>Median</WaveformType><NumberofLeads>8</NumberofLeads>"
          f"<SampleBase>{muse_real.SAMPLE_BASE}</SampleBase><SampleExponent>0</SampleExponent>"
          f"{''.join(parts)}</Waveform></RestingECG>")


def test_muse_real_median_beats_decode_byte_exact(tmp_path):
  (tmp_path / "example1.xml").write_bytes(_muse_file().encode("iso-8859-1"))
  src = data.open_source(f"muse:{tmp_path}?waveform=median")
  rec = src[0]
  assert rec["fs"] == 500.0 and rec["signal"].shape == (12, 600) and rec["lead_mask"].all()
  for name, crc, b64 in muse_real.LEADS:
    raw = base64.b64decode(b64)
    assert zlib.crc32(raw) == crc  # the file's own CRC: our excerpt is byte-exact
    np.testing.assert_allclose(_lead(rec, name), np.frombuffer(raw, "<i2") * 4.88e-3,
                               rtol=1e-6)
  # By hand: lead II's R peak is 261 counts (0x0105) x 4.88 uV = 1.27368 mV.
  assert _lead(rec, "II").max() == pytest.approx(261 * 4.88e-3)
  i, ii = _lead(rec, "I"), _lead(rec, "II")
  np.testing.assert_allclose(_lead(rec, "III"), ii - i, atol=1e-6)
  np.testing.assert_allclose(_lead(rec, "aVF"), ii - i / 2, atol=1e-6)
  assert src.info(0)["derived_leads"] == ["III", "aVR", "aVL", "aVF"]


def test_muse_crc_mismatch_is_a_bad_record_unless_ignored(tmp_path):
  leads = list(muse_real.LEADS)
  name, crc, b64 = leads[2]
  raw = bytearray(base64.b64decode(b64))
  raw[100] ^= 0x01  # one flipped bit in V1
  leads[2] = (name, crc, base64.b64encode(bytes(raw)).decode())
  (tmp_path / "flipped.xml").write_bytes(_muse_file(leads).encode("iso-8859-1"))
  with pytest.raises(sources.BadRecordError, match=r"lead V1: WaveFormData fails its "
                     r"LeadDataCRC32.*flipped\.xml|flipped\.xml.*lead V1.*LeadDataCRC32"):
    data.open_source(f"muse:{tmp_path}?waveform=median")[0]
  rec = data.open_source(f"muse:{tmp_path}?waveform=median&crc=ignore")[0]
  assert rec["signal"].shape == (12, 600)


# ----------------------------------------------------------------------------------------- aECG
def _seq(code, digits, scale=aecg_real.SCALE_UV):
  return (f'<component><sequence><code code="{code}" codeSystem="2.16.840.1.113883.6.24" '
          'codeSystemName="MDC"/><value xsi:type="SLIST_PQ"><origin value="0" unit="uV"/>'
          f'<scale value="{scale}" unit="uV"/><digits>{digits}</digits></value></sequence>'
          "</component>")


def _aecg_file():
  rhythm = ('<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"'
            '/><value xsi:type="GLIST_TS"><head value="20021122091000"/><increment value="'
            f'{aecg_real.RHYTHM_INCREMENT_S}" unit="s"/></value></sequence></component>'
            + _seq("MDC_ECG_LEAD_I", aecg_real.RHYTHM_LEAD_I))
  n = 150
  avl = " ".join(aecg_real.DERIVED_AVL.split()[:n])
  avf = " ".join(aecg_real.DERIVED_AVF.split()[:n])
  derived = ('<component><sequence><code code="TIME_RELATIVE" codeSystem="2.16.840.1.113883.5.4"'
             '/><value xsi:type="GLIST_PQ"><head value="0" unit="s"/><increment value="0.002" '
             'unit="s"/></value></sequence></component>'
             + _seq("MDC_ECG_LEAD_AVL", avl) + _seq("MDC_ECG_LEAD_AVF", avf))
  return ('<?xml version="1.0" encoding="UTF-8"?>\n<!-- Sample Annotated ECG -->\n'
          '<AnnotatedECG xmlns="urn:hl7-org:v3" xmlns:voc="urn:hl7-org:v3/voc" '
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" type="Observation">'
          '<id root="61d1a24f-b47e-41aa-ae95-f8ac302f4eeb" extension="subject1_0"/>'
          "<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>"
          '<id root="2.16.840.1.113883.3.400" extension="subject1"/></trialSubject></subject>'
          "</subjectAssignment></componentOf></timepointEvent></componentOf>"
          '<component><series><code code="RHYTHM" codeSystem="2.16.840.1.113883.5.4"/>'
          f"<component><sequenceSet>{rhythm}</sequenceSet></component>"
          '<derivation><derivedSeries><code code="REPRESENTATIVE_BEAT" '
          'codeSystem="2.16.840.1.113883.5.4"/>'
          f"<component><sequenceSet>{derived}</sequenceSet></component></derivedSeries>"
          "</derivation></series></component></AnnotatedECG>")


def test_aecg_real_layout_rhythm_and_nested_representative_beats(tmp_path):
  (tmp_path / "subject1_0.xml").write_text(_aecg_file())
  rec = data.open_source(str(tmp_path))[0]  # auto: by content
  digits_i = np.array(aecg_real.RHYTHM_LEAD_I.split(), dtype=float)
  assert rec["fs"] == pytest.approx(500.0) and rec["signal"].shape == (12, digits_i.size)
  assert rec["patient_id"] == "subject1"
  np.testing.assert_allclose(_lead(rec, "I"), digits_i * 2.5e-3, rtol=1e-6)
  # By hand: the first R peak is digit 139 x 2.5 uV = 0.3475 mV.
  assert _lead(rec, "I").max() == pytest.approx(0.3475)
  mask = dict(zip(L12, rec["lead_mask"]))
  assert mask["I"] and not mask["aVL"]  # the nested beat's leads are not rhythm leads
  med = data.open_source(f"aecg:{tmp_path}?waveform=median")[0]
  assert med["signal"].shape == (12, 150)
  assert _lead(med, "aVL")[0] == pytest.approx(-22 * 2.5e-3)
  assert _lead(med, "aVF")[0] == pytest.approx(50 * 2.5e-3)


def test_derived_leads_are_flagged_through_prepare_and_lead_selection(tmp_path):
  from ecgjax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "example1.xml").write_bytes(_muse_file().encode("iso-8859-1"))
  want = [float(n in ("III", "aVR", "aVL", "aVF")) for n in L12]
  rec = data.open_source(f"muse:{raw}?waveform=median")[0]
  assert list(rec["derived_mask"]) == want and rec["lead_mask"].all()
  pp = data.Preprocessing(fs=500.0, samples=600, leads=("aVF", "II", "V1"))
  prepare_lib.prepare(f"muse:{raw}?waveform=median", str(tmp_path / "prep"), pp, workers=0,
                      progress=False)
  prepared = data.open_source(f"prepared:{tmp_path / 'prep'}")[0]
  assert list(prepared["derived_mask"]) == [1.0, 0.0, 0.0]  # in the contract's lead order
  picked = sources.LeadSelectedSource(data.open_source(f"muse:{raw}?waveform=median"),
                                      ("aVL", "I", "V1"))[0]
  assert list(picked["derived_mask"]) == [1.0, 0.0, 0.0]
  from ecgjax.data import inspect as inspect_lib  # pylint: disable=g-import-not-at-top
  summary = inspect_lib.inspect_source(f"muse:{raw}?waveform=median", workers=0,
                                       progress=False)
  assert summary["derived_leads"] == {"III,aVR,aVL,aVF": 1}
  assert "derived from the stored leads" in inspect_lib.format_summary(summary)


def test_a_directory_prepared_before_the_derived_column_still_reads(tmp_path):
  from numpy.lib import recfunctions  # pylint: disable=g-import-not-at-top
  from ecgjax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  raw = tmp_path / "raw"
  raw.mkdir()
  (raw / "example1.xml").write_bytes(_muse_file().encode("iso-8859-1"))
  out = tmp_path / "prep"
  prepare_lib.prepare(f"muse:{raw}?waveform=median", str(out),
                      data.Preprocessing(fs=500.0, samples=600), workers=0, progress=False)
  index = np.load(out / "index.npy")
  np.save(out / "index.npy", recfunctions.drop_fields(index, "derived_mask", usemask=False))
  rec = data.open_source(f"prepared:{out}")[0]
  assert not rec["derived_mask"].any() and rec["signal"].shape == (12, 600)
