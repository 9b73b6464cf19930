"""DICOM ECG waveforms: the scale from the file's own channel fields, lead names from their
codes or meanings, the longest multiplex group, bad files named."""

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian  # noqa: E402

from ecgjax import data  # noqa: E402
from ecgjax import leads as leads_lib  # noqa: E402
from ecgjax.data import sources  # noqa: E402
from ecgjax.data.formats import dicom  # noqa: E402

TWELVE_LEAD_ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"
# (code, meaning): SCPECG codes for most, a meaning-only channel, and a non-lead channel.
CHANNELS = [("5.6.3-9-1", "Lead I (Einthoven)"), ("5.6.3-9-2", "Lead II"),
            ("5.6.3-9-3", "Lead V1"), ("5.6.3-9-4", "Lead V2"), ("5.6.3-9-5", "Lead V3"),
            ("5.6.3-9-6", "Lead V4"), ("5.6.3-9-7", "Lead V5"), ("", "Lead V6"),
            ("X-RESP", "Respiration")]


def _channel(code, meaning, sens, corr, base, unit):
  ch = Dataset()
  src = Dataset()
  src.CodeValue, src.CodingSchemeDesignator, src.CodeMeaning = code or "X", "SCPECG", meaning
  if not code:
    src.CodeValue = "unknown"
  ch.ChannelSourceSequence = Sequence([src])
  ch.ChannelSensitivity, ch.ChannelSensitivityCorrectionFactor = sens, corr
  ch.ChannelBaseline = base
  u = Dataset()
  u.CodeValue, u.CodingSchemeDesignator, u.CodeMeaning = unit, "UCUM", unit
  ch.ChannelSensitivityUnitsSequence = Sequence([u])
  ch.WaveformBitsStored = 16
  return ch


def _group(stored, fs, label, sens=2.5, corr=0.95, base=1.5, unit="uV", channels=CHANNELS):
  g = Dataset()
  g.MultiplexGroupLabel = label
  g.SamplingFrequency = fs
  g.NumberOfWaveformChannels = stored.shape[1]
  g.NumberOfWaveformSamples = stored.shape[0]
  g.WaveformBitsAllocated, g.WaveformSampleInterpretation = 16, "SS"
  g.ChannelDefinitionSequence = Sequence([_channel(c, m, sens, corr, base, unit)
                                          for c, m in channels[:stored.shape[1]]])
  g.WaveformData = stored.astype("<i2").tobytes()
  return g


def _write(path, groups, patient="PX1"):
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = TWELVE_LEAD_ECG
  meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta = meta
  ds.SOPClassUID, ds.SOPInstanceUID = TWELVE_LEAD_ECG, meta.MediaStorageSOPInstanceUID
  ds.Modality, ds.PatientID = "ECG", patient
  ds.AcquisitionDateTime = "20190314081502"
  ds.WaveformSequence = Sequence(groups)
  ds.save_as(str(path), enforce_file_format=True)


def test_scale_leads_and_groups_by_hand(tmp_path):
  rng = np.random.default_rng(0)
  rhythm = rng.integers(-3000, 3000, (5000, 9))
  median = rng.integers(-3000, 3000, (600, 9))
  _write(tmp_path / "ECG0001", [_group(median, 500, "MEDIAN BEATS", sens=1.0, corr=1.0,
                                       base=0.0, unit="mV"),
                                _group(rhythm, 500, "RHYTHM")])
  (tmp_path / "readme.txt").write_text("not DICOM")
  src = data.open_source(f"dicom:{tmp_path}")
  assert isinstance(src, dicom.DicomSource) and len(src) == 1
  rec = src[0]
  assert rec["fs"] == 500.0 and rec["signal"].shape == (12, 5000) and rec["lead_mask"].all()
  assert rec["patient_id"] == "PX1" and rec["record_id"] == "ECG0001"
  mv = (rhythm * 2.5 * 0.95 + 1.5) * 1e-3  # stored x sensitivity x correction + baseline, uV
  x = {n: rec["signal"][leads_lib.LEADS_12.index(n)] for n in leads_lib.LEADS_12}
  for k, name in enumerate(("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")):
    np.testing.assert_allclose(x[name], mv[:, k], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(x["aVF"], mv[:, 1] - mv[:, 0] / 2, rtol=1e-5, atol=1e-6)
  info = src.info(0)
  assert info["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
  assert info["left_out_channels"] == ["Respiration"]
  med = data.open_source(f"dicom:{tmp_path}?waveform=median")[0]
  assert med["signal"].shape == (12, 600)
  np.testing.assert_allclose(med["signal"][1], median[:, 1], rtol=1e-6)  # 1 mV per count
  assert data.open_source(str(tmp_path)).__class__ is dicom.DicomSource  # auto: by content


def test_bad_files_are_bad_records(tmp_path):
  rng = np.random.default_rng(1)
  good = rng.integers(-100, 100, (100, 2))
  g = _group(good, 500, "RHYTHM")
  g.WaveformData = g.WaveformData[:50]  # truncated
  _write(tmp_path / "short.dcm", [g])
  src = data.open_source(f"dicom:{tmp_path}")
  with pytest.raises(sources.BadRecordError, match="short.dcm: WaveformData holds 50 bytes"):
    src[0]
  _write(tmp_path / "short.dcm", [_group(good, 500, "RHYTHM", unit="furlong")])
  with pytest.raises(sources.BadRecordError, match="sensitivity unit 'furlong'"):
    data.open_source(f"dicom:{tmp_path}")[0]
  with pytest.raises(sources.BadRecordError, match="no median multiplex group"):
    data.open_source(f"dicom:{tmp_path}?waveform=median")[0]


def test_unlabelled_groups_the_short_one_is_the_median(tmp_path):
  # As a GE MV360 export stores them: a 10 s rhythm and a 600-sample beat, neither labelled.
  rng = np.random.default_rng(2)
  rhythm, beat = rng.integers(-900, 900, (5000, 8)), rng.integers(-900, 900, (600, 8))
  _write(tmp_path / "ge.dcm", [_group(rhythm, 500, "", sens=1.0, corr=1.0, base=0.0),
                               _group(beat, 500, "", sens=1.0, corr=1.0, base=0.0)])
  assert data.open_source(f"dicom:{tmp_path}")[0]["signal"].shape == (12, 5000)
  med = data.open_source(f"dicom:{tmp_path}?waveform=median")[0]
  assert med["signal"].shape == (12, 600)
  np.testing.assert_allclose(med["signal"][1], beat[:, 1] * 1e-3, rtol=1e-6)  # 1 uV per count
  _write(tmp_path / "ge.dcm", [_group(rhythm, 500, "", sens=1.0, corr=1.0, base=0.0)])
  with pytest.raises(sources.BadRecordError, match="no median multiplex group"):
    data.open_source(f"dicom:{tmp_path}?waveform=median")[0]  # one group: no beat to pick


def test_a_dicom_file_without_a_waveform_is_refused(tmp_path):
  meta = FileMetaDataset()
  meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
  meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
  meta.TransferSyntaxUID = ExplicitVRLittleEndian
  ds = Dataset()
  ds.file_meta, ds.PatientID = meta, "P"
  ds.save_as(str(tmp_path / "image.dcm"), enforce_file_format=True)
  with pytest.raises(ValueError, match="no DICOM waveform file"):
    data.open_source(f"dicom:{tmp_path}")
