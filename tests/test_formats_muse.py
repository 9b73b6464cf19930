"""GE MUSE XML: units from the file's own scale fields, 8 stored leads -> 12, bad files named."""

import base64

import numpy as np
import pytest

from ecgjax import data
from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data.formats import muse

STORED = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def _lead(name, counts, per_bit="4.88", units="MICROVOLTS", baseline="0", n=None, data=None):
  payload = data if data is not None else base64.b64encode(
      np.asarray(counts, "<i2").tobytes()).decode()
  return (f"<LeadData><LeadSampleCountTotal>{len(counts) if n is None else n}"
          f"</LeadSampleCountTotal><LeadAmplitudeUnitsPerBit>{per_bit}"
          f"</LeadAmplitudeUnitsPerBit><LeadAmplitudeUnits>{units}</LeadAmplitudeUnits>"
          f"<FirstSampleBaseline>{baseline}</FirstSampleBaseline><LeadID>{name}</LeadID>"
          f"<WaveFormData>{payload}</WaveFormData></LeadData>")


def _waveform(kind, fs, leads):
  return (f"<Waveform><WaveformType>{kind}</WaveformType><SampleBase>{fs}</SampleBase>"
          f"<SampleExponent>0</SampleExponent>{''.join(leads)}</Waveform>")


def _file(waveforms, patient="P17"):
  return ('<?xml version="1.0" encoding="ISO-8859-1"?>\n'
          '<!DOCTYPE RestingECG SYSTEM "restecg.dtd">\n<RestingECG>'
          f"<PatientDemographics><PatientID>{patient}</PatientID></PatientDemographics>"
          "<TestDemographics><AcquisitionDate>03-14-2019</AcquisitionDate>"
          "<AcquisitionTime>08:15:02</AcquisitionTime></TestDemographics>"
          "<Diagnosis><DiagnosisStatement><StmtText>Sinus rhythm</StmtText>"
          "</DiagnosisStatement><DiagnosisStatement><StmtText>Normal ECG</StmtText>"
          f"</DiagnosisStatement></Diagnosis>{''.join(waveforms)}</RestingECG>")


def _counts(rng, n):
  return {name: rng.integers(-2000, 2000, n) for name in STORED}


def test_units_leads_and_metadata_by_hand(tmp_path):
  rng = np.random.default_rng(0)
  rhythm, median = _counts(rng, 5000), _counts(rng, 600)
  leads = [_lead(n, rhythm[n], baseline="12" if n == "I" else "0") for n in STORED]
  leads.append(_lead("V3R", rhythm["V1"]))  # not a standard lead: left out, listed
  xml = _file([_waveform("Median", 500, [_lead(n, median[n], per_bit="1", units="MILLIVOLTS")
                                        for n in STORED]),
               _waveform("Rhythm", 500, leads)])
  (tmp_path / "a.xml").write_text(xml, encoding="latin-1")
  src = data.open_source(f"muse:{tmp_path}")
  rec = src[0]
  assert rec["fs"] == 500.0 and rec["signal"].shape == (12, 5000) and rec["lead_mask"].all()
  assert rec["record_id"] == "a" and rec["patient_id"] == "P17"
  x = {n: rec["signal"][leads_lib.LEADS_12.index(n)] for n in leads_lib.LEADS_12}
  lead_i, lead_ii = rhythm["I"] * 4.88e-3, rhythm["II"] * 4.88e-3  # counts x uV/bit -> mV
  np.testing.assert_allclose(x["I"], lead_i, rtol=1e-6)
  np.testing.assert_allclose(x["V5"], rhythm["V5"] * 4.88e-3, rtol=1e-6)
  np.testing.assert_allclose(x["III"], lead_ii - lead_i, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(x["aVR"], -(lead_i + lead_ii) / 2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(x["aVL"], lead_i - lead_ii / 2, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(x["aVF"], lead_ii - lead_i / 2, rtol=1e-5, atol=1e-6)
  info = src.info(0)
  assert info["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
  assert info["left_out_channels"] == ["V3R"] and info["first_sample_baseline"]["I"] == "12"
  assert info["statements"] == ["Sinus rhythm", "Normal ECG"]
  assert (info["acquisition_date"], info["acquisition_time"]) == ("03-14-2019", "08:15:02")
  med = data.open_source(f"muse:{tmp_path}?waveform=median")[0]
  assert med["signal"].shape == (12, 600)
  np.testing.assert_allclose(med["signal"][1], median["II"], rtol=1e-6)  # 1 mV per bit
  assert src.metadata()["patient_id"].tolist() == ["P17"]


def test_found_by_content_whatever_the_name_and_encoding(tmp_path):
  rng = np.random.default_rng(1)
  c = _counts(rng, 100)
  xml = _file([_waveform("Rhythm", 250, [_lead(n, c[n]) for n in STORED])])
  (tmp_path / "d").mkdir()
  (tmp_path / "d" / "ECG_0001.TXT").write_text(xml, encoding="latin-1")
  (tmp_path / "d" / "utf16.dat").write_bytes(
      xml.replace("ISO-8859-1", "UTF-16").encode("utf-16"))
  (tmp_path / "d" / "notes.txt").write_text("not an ECG")
  assert muse.detect(str(tmp_path / "d"))
  src = data.open_source(str(tmp_path / "d"))  # auto: detected by content
  assert isinstance(src, muse.MuseSource) and len(src) == 2
  assert sorted(src.metadata()["record_id"]) == ["ECG_0001.TXT", "utf16.dat"]
  np.testing.assert_allclose(src[0]["signal"], src[1]["signal"])
  assert src[0]["fs"] == 250.0


@pytest.mark.parametrize("body, reason", [
    (lambda c: _file([_waveform("Rhythm", 500, [_lead("I", c)])])[:-30], "malformed XML"),
    (lambda c: _file([_waveform("Rhythm", 500, [_lead("I", c, data="@@not base64@@")])]),
     "is not base64"),
    (lambda c: _file([_waveform("Median", 500, [_lead("I", c)])]), "no rhythm <Waveform>"),
    (lambda c: _file([_waveform("Rhythm", 500, [_lead("I", c, n=99)])]),
     "LeadSampleCountTotal says 99"),
    (lambda c: _file([_waveform("Rhythm", 500, [_lead("I", c, units="FURLONGS")])]),
     "unknown LeadAmplitudeUnits"),
    (lambda c: _file([_waveform("Rhythm", 500, [_lead("I", c), _lead("II", c[:10])])]),
     "different lengths"),
    (lambda c: _file([_waveform("Rhythm", "", [_lead("I", c)])]), "SampleBase"),
])
def test_bad_files_are_bad_records_naming_the_file_and_reason(tmp_path, body, reason):
  (tmp_path / "bad.xml").write_text(body(np.arange(50)), encoding="latin-1")
  src = data.open_source(f"muse:{tmp_path}")
  with pytest.raises(sources.BadRecordError, match=reason) as e:
    src[0]
  assert "bad.xml" in str(e.value)


def test_a_directory_without_muse_files_is_one_clear_error(tmp_path):
  (tmp_path / "x.xml").write_text("<other/>")
  with pytest.raises(ValueError, match="no MUSE XML file"):
    data.open_source(f"muse:{tmp_path}")
