"""HL7 aECG: origin + scale x digits in the file's units, the rate from the time increment,
rhythm or representative-beat series, bad files named."""

import numpy as np
import pytest

from ecgjax import data
from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data.formats import aecg

STORED = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def _seq(code, digits, origin=0.0, scale=5.0, unit="uV"):
  return (f'<component><sequence><code code="{code}" codeSystem="2.16.840.1.113883.6.24"/>'
          f'<value xsi:type="SLIST_PQ"><origin value="{origin}" unit="{unit}"/>'
          f'<scale value="{scale}" unit="{unit}"/><digits>{" ".join(map(str, digits))}</digits>'
          "</value></sequence></component>")


def _set(increment, seqs, unit="s"):
  time = ('<component><sequence><code code="TIME_ABSOLUTE" codeSystem="2.16.840.1.113883.5.4"/>'
          '<value xsi:type="GLIST_TS"><head value="20190314081502.000"/>'
          f'<increment value="{increment}" unit="{unit}"/></value></sequence></component>')
  return f"<sequenceSet>{time}{''.join(seqs)}</sequenceSet>"


def _file(rhythm_sets, median_set=None, subject="SUBJ-9"):
  median = (f"<derivation><derivedSeries><code code=\"REPRESENTATIVE_BEAT\"/><component>"
            f"{median_set}</component></derivedSeries></derivation>" if median_set else "")
  series = "".join(f'<component><series><code code="RHYTHM"/><component>{s}</component>'
                   f"{median if k == 0 else ''}</series></component>"
                   for k, s in enumerate(rhythm_sets))
  return ('<?xml version="1.0" encoding="UTF-8"?>\n<AnnotatedECG xmlns="urn:hl7-org:v3" '
          'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><id root="1.2.3"/>'
          "<componentOf><timepointEvent><componentOf><subjectAssignment><subject><trialSubject>"
          f'<id extension="{subject}"/></trialSubject></subject></subjectAssignment>'
          f"</componentOf></timepointEvent></componentOf>{series}</AnnotatedECG>")


def test_values_rate_series_by_hand(tmp_path):
  rng = np.random.default_rng(0)
  d = {n: rng.integers(-900, 900, 1000) for n in STORED}
  seqs = [_seq(f"MDC_ECG_LEAD_{n}", d[n], origin=10.0) for n in STORED]
  seqs.append(_seq("MDC_ECG_LEAD_V3R", d["V1"]))
  short = [_seq(f"MDC_ECG_LEAD_{n}", d[n][:100]) for n in STORED]
  med = [_seq(f"MDC_ECG_LEAD_{n}", d[n][:300], scale=1.0, unit="mV") for n in STORED]
  (tmp_path / "t.xml").write_text(_file([_set("0.002", short), _set("2", seqs, unit="ms")],
                                        _set("0.004", med)))
  src = data.open_source(f"aecg:{tmp_path}")
  rec = src[0]  # the longest series: 1000 samples at 1 / 2 ms = 500 Hz
  assert rec["fs"] == pytest.approx(500.0) and rec["signal"].shape == (12, 1000)
  assert rec["lead_mask"].all() and rec["patient_id"] == "SUBJ-9" and rec["record_id"] == "t"
  lead_i = (10.0 + 5.0 * d["I"]) * 1e-3  # origin + scale x digit, uV -> mV
  np.testing.assert_allclose(rec["signal"][0], lead_i, rtol=1e-6)
  lead_ii = (10.0 + 5.0 * d["II"]) * 1e-3
  np.testing.assert_allclose(rec["signal"][leads_lib.LEADS_12.index("aVR")],
                             -(lead_i + lead_ii) / 2, rtol=1e-5, atol=1e-6)
  info = src.info(0)
  assert info["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
  assert info["left_out_channels"] == ["MDC_ECG_LEAD_V3R"]
  m = data.open_source(f"aecg:{tmp_path}?waveform=median")[0]
  assert m["fs"] == pytest.approx(250.0) and m["signal"].shape == (12, 300)
  np.testing.assert_allclose(m["signal"][1], d["II"][:300], rtol=1e-6)  # 1 mV per digit
  assert isinstance(data.open_source(str(tmp_path)), aecg.AecgSource)  # auto: by content


@pytest.mark.parametrize("text, reason", [
    (lambda s: _file([_set("0.002", [s])])[:-20], "malformed XML"),
    (lambda s: _file([_set("0.002", [s.replace("uV", "furlong")])]), "unit 'furlong'"),
    (lambda s: _file([_set("0.002", [s.replace("<digits>1 2 3", "<digits>1 x 3")])]),
     "digits are not numbers"),
    (lambda s: _file([_set("", [s])]), "unknown sampling rate"),
    (lambda s: _file([]), "no component/series"),
])
def test_bad_files_are_bad_records(tmp_path, text, reason):
  (tmp_path / "b.xml").write_text(text(_seq("MDC_ECG_LEAD_II", [1, 2, 3, 4])))
  with pytest.raises(sources.BadRecordError, match=reason) as e:
    data.open_source(f"aecg:{tmp_path}")[0]
  assert "b.xml" in str(e.value)
