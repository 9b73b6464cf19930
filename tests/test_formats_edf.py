"""EDF / EDF+: each channel's own physical/digital range and unit, ECG channels by label at
their common rate, other channels and annotations apart, bad files named."""

import numpy as np
import pytest

edfio = pytest.importorskip("edfio")

from ecgjax import data  # noqa: E402
from ecgjax import leads as leads_lib  # noqa: E402
from ecgjax.data import sources  # noqa: E402
from ecgjax.data.formats import edf as edf_fmt  # noqa: E402

STORED = ("ECG I", "ECG II", "EKG V1", "EKG-V2", "V3", "V4", "V5", "V6")


def _signal(label, digital, fs, unit="uV", phys=(-5000.0, 5000.0)):
  return edfio.EdfSignal.from_digital(digital.astype(np.int16), fs, label=label,
                                      physical_dimension=unit, physical_range=phys,
                                      digital_range=(-32768, 32767))


def _write(path, signals, annotations=()):
  edfio.Edf(signals, annotations=[edfio.EdfAnnotation(*a) for a in annotations]).write(path)


def test_scale_by_hand_leads_and_other_channels(tmp_path):
  rng = np.random.default_rng(0)
  dig = {k: rng.integers(-30000, 30000, 2500) for k in STORED}
  sigs = [_signal(k, dig[k], 250) for k in STORED]
  sigs.append(_signal("Resp", rng.integers(-100, 100, 250), 25, unit="Ohm"))
  sigs.append(_signal("ECG aVR", rng.integers(-100, 100, 5000), 500))  # another rate: left out
  _write(tmp_path / "rec.EDF", sigs, [(1.0, None, "PVC")])
  src = data.open_source(f"edf:{tmp_path}")
  rec = src[0]
  assert rec["fs"] == 250.0 and rec["signal"].shape == (12, 2500) and rec["lead_mask"].all()
  # physical = (digital - dmin) * (pmax - pmin) / (dmax - dmin) + pmin, here in uV -> mV
  gain = 10000.0 / 65535.0
  want_i = ((dig["ECG I"] + 32768) * gain - 5000.0) * 1e-3
  np.testing.assert_allclose(rec["signal"][0], want_i, rtol=1e-5, atol=1e-6)
  want_ii = ((dig["ECG II"] + 32768) * gain - 5000.0) * 1e-3
  avf = rec["signal"][leads_lib.LEADS_12.index("aVF")]
  np.testing.assert_allclose(avf, want_ii - want_i / 2, rtol=1e-5, atol=1e-5)
  info = src.info(0)
  assert info["derived_leads"] == ["III", "aVR", "aVL", "aVF"]
  assert info["left_out_channels"][0] == "Resp"
  assert "500 Hz" in info["left_out_channels"][1]
  assert [a[2] for a in info["annotations"]] == ["PVC"]
  assert data.open_source(str(tmp_path)).__class__ is edf_fmt.EdfSource  # auto: by content


def test_millivolt_channels_and_labels():
  assert edf_fmt.lead_of_label("EKG-II") == "II" and edf_fmt.lead_of_label("ECG aVL") == "aVL"
  assert edf_fmt.lead_of_label("EEG Fp1") is None and edf_fmt.lead_of_label("ECG") is None


def test_bad_files_are_bad_records(tmp_path):
  rng = np.random.default_rng(1)
  _write(tmp_path / "a.edf", [_signal("ECG I", rng.integers(-10, 10, 100), 100, unit="degC")])
  src = data.open_source(f"edf:{tmp_path}")
  with pytest.raises(sources.BadRecordError, match="a.edf: signal 'ECG I': physical dimension"):
    src[0]
  blob = (tmp_path / "a.edf").read_bytes()
  (tmp_path / "a.edf").write_bytes(blob[:256] + b"garbage")  # a header, then nothing valid
  with pytest.raises(sources.BadRecordError, match="a.edf: not a readable EDF file"):
    data.open_source(f"edf:{tmp_path}")[0]
  (tmp_path / "a.edf").unlink()
  _write(tmp_path / "eeg.edf", [_signal("EEG Fp1", rng.integers(-10, 10, 100), 100)])
  with pytest.raises(sources.BadRecordError, match="no ECG lead among the signals"):
    data.open_source(f"edf:{tmp_path}")[0]
