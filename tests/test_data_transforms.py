"""Per-record transforms and the Preprocessing input contract."""

import json

import numpy as np
import pytest

from ecgjax import data
from ecgjax.data import transforms


def _sine(freq, fs, seconds, leads=2):
  t = np.arange(int(fs * seconds)) / fs
  rows = [np.sin(2 * np.pi * freq * t + k) for k in range(leads)]
  return np.stack(rows).astype(np.float32)


def _dominant_freq(x, fs):
  spec = np.abs(np.fft.rfft(x, axis=-1))
  return np.fft.rfftfreq(x.shape[-1], 1 / fs)[spec.argmax(axis=-1)]


@pytest.mark.parametrize("method", ["fft", "linear"])
@pytest.mark.parametrize("fs_in,fs_out", [(500, 250), (250, 500), (400, 250)])
def test_resample_preserves_length_in_seconds_and_frequency(method, fs_in, fs_out):
  x = _sine(7.0, fs_in, 10)
  y = data.resample(x, fs_in, fs_out, method)
  assert y.shape == (2, 10 * fs_out) and y.dtype == np.float32
  np.testing.assert_allclose(_dominant_freq(y, fs_out), 7.0, atol=0.11)
  t = np.arange(y.shape[1]) / fs_out
  ref = np.sin(2 * np.pi * 7 * t)
  inner = slice(20, -20)  # Edges: FFT wrap-around, last-sample hold.
  assert np.abs(y[0, inner] - ref[inner]).max() < 0.05


def test_resample_same_rate_is_identity():
  x = _sine(3.0, 250, 2)
  assert data.resample(x, 250, 250) is x
  with pytest.raises(ValueError, match="unknown resample method"):
    data.resample(x, 250, 500, "cubic")


def _amplitude(y, freq, fs):
  """Amplitude of the `freq` component (least squares on sin/cos)."""
  t = np.arange(y.shape[-1]) / fs
  basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
  coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
  return float(np.hypot(*coef))


def test_bandpass_removes_wander_and_hum_keeps_10hz():
  fs = 500.0
  keep = _sine(10.0, fs, 20, leads=1)[0]
  wander = 2.0 * _sine(0.1, fs, 20, leads=1)[0]
  hum = 0.5 * _sine(60.0, fs, 20, leads=1)[0]
  x = np.stack([keep + wander + hum, keep]).astype(np.float32)
  y = data.bandpass(x, fs, 0.67, 40.0, order=5)
  assert y.dtype == np.float32 and y.shape == x.shape
  inner = slice(1000, -1000)  # Away from the filter's edge transients.
  assert _amplitude(y[0, inner], 0.1, fs) < 0.02 * 2.0
  assert _amplitude(y[0, inner], 60.0, fs) < 0.05 * 0.5
  assert abs(_amplitude(y[0, inner], 10.0, fs) - 1.0) < 0.02
  # Zero phase: the kept tone is not delayed.
  assert np.abs(y[1, inner] - keep[inner]).max() < 0.02
  with pytest.raises(ValueError, match="below fs/2"):
    data.bandpass(x, 60.0, 0.67, 40.0)


def test_bandpass_is_two_order5_passes_like_st_mem():
  from scipy import signal as sps
  x = np.random.default_rng(0).standard_normal((3, 1000))
  hp = sps.butter(5, 0.67, "highpass", fs=250, output="sos")
  lp = sps.butter(5, 40.0, "lowpass", fs=250, output="sos")
  ref = sps.sosfiltfilt(lp, sps.sosfiltfilt(hp, x))
  np.testing.assert_allclose(data.bandpass(x, 250, 0.67, 40.0), ref, atol=1e-10)
  short = data.bandpass(x[:, :12].astype(np.float32), 250, 0.67, 40.0)
  assert np.isfinite(short).all()


def test_standardize_modes():
  x = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 10.0, 10.0, 10.0]], np.float32)
  g = data.standardize(x, "global")
  np.testing.assert_allclose(g.mean(), 0, atol=1e-6)
  np.testing.assert_allclose(g.std(), 1, atol=1e-6)  # Population std (ddof=0).
  np.testing.assert_allclose(g, (x - x.mean()) / x.std(), atol=1e-6)
  p = data.standardize(x, "per_lead")
  np.testing.assert_allclose(p[0], (x[0] - 2.5) / np.std(x[0]), atol=1e-6)
  np.testing.assert_array_equal(p[1], 0.0)  # Constant lead -> zeros, not NaN.
  np.testing.assert_array_equal(data.standardize(np.full((2, 5), 3.0), "global"), 0.0)
  with pytest.raises(ValueError):
    data.standardize(x, "batch")


def test_crops():
  np.testing.assert_array_equal(data.crop_starts(2500, 2250, 3), [0, 125, 250])
  np.testing.assert_array_equal(data.crop_starts(2250, 2250, 3), [0, 0, 0])
  np.testing.assert_array_equal(data.crop_starts(1000, 2250, 3), [0, 0, 0])
  np.testing.assert_array_equal(data.crop_starts(2500, 2250, 1), [0])
  x = np.arange(20, dtype=np.float32).reshape(2, 10)
  np.testing.assert_array_equal(data.crop_or_pad(x, 4, 3), x[:, 3:7])
  padded = data.crop_or_pad(x, 13)
  assert padded.shape == (2, 13) and not padded[:, 10:].any()
  rng = np.random.default_rng(0)
  starts = {int(data.random_crop(x, 4, rng)[0, 0]) for _ in range(200)}
  assert starts == set(range(7))
  assert data.random_crop(x, 12, rng).shape == (2, 12)


def test_preprocessing_dict_round_trip():
  pp = data.st_mem_preprocessing()
  d = json.loads(json.dumps(pp.to_dict()))
  assert data.Preprocessing.from_dict(d) == pp
  assert d["bandpass"] == [0.67, 40.0] and d["leads"][3] == "aVR"
  with pytest.raises(ValueError, match="unknown Preprocessing keys.*'notch'"):
    data.Preprocessing.from_dict({**d, "notch": 50})
  fm = data.ecg_fm_preprocessing()
  assert data.Preprocessing.from_dict(fm.to_dict()) == fm
  assert (fm.fs, fm.samples, fm.standardize, fm.resample_method, fm.bandpass) == (
      500.0, 2500, "per_lead", "linear", None)
  for bad in ({"standardize": "batch"}, {"resample_method": "cubic"},
              {"bandpass": (40.0, 0.67)}, {"leads": ("I", "X")}):
    with pytest.raises(ValueError):
      data.Preprocessing(fs=250, samples=100, **bad)


def _record(signal, fs=500.0, leads=data.LEADS_12, rid="rec-1"):
  return data.make_record(signal, fs, leads, rid)


def test_preprocessing_end_to_end():
  rec = data.open_source("synthetic:3?fs=500")[2]
  pp = data.st_mem_preprocessing()
  x, mask = pp.prepare(rec)
  assert x.shape == (12, 2500) and x.dtype == np.float32 and mask.all()
  y = pp(rec)
  assert y.shape == (12, 2250) and y.dtype == np.float32
  np.testing.assert_allclose([y.mean(), y.std()], [0, 1], atol=1e-5)
  np.testing.assert_array_equal(y, pp.finish(x[:, :2250]))
  r1 = pp(rec, np.random.default_rng(1))
  assert r1.shape == (12, 2250)
  np.testing.assert_array_equal(r1, pp(rec, np.random.default_rng(1)))
  crops = pp.crops(rec, 3)
  assert crops.shape == (3, 12, 2250)
  np.testing.assert_array_equal(crops[1], pp.finish(x[:, 125:2375]))
  # A 9 s record (exactly the crop length) works for n-crop evaluation.
  short = _record(rec["signal"][:, :4500], rid="short")
  assert pp.crops(short, 3).shape == (3, 12, 2250)


def test_preprocessing_reorders_and_masks_leads():
  sig = _sine(5.0, 250, 10, leads=3)
  rec = _record(sig, fs=250, leads=("V1", "I", "II"))
  pp = data.Preprocessing(fs=250, samples=2500, standardize=None)
  x, mask = pp.prepare(rec)
  np.testing.assert_array_equal(mask, [1, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
  np.testing.assert_array_equal(x[6], sig[0])
  np.testing.assert_array_equal(x[0], sig[1])
  assert not x[2].any()
  per_lead = data.Preprocessing(fs=250, samples=2500, standardize="per_lead")
  assert np.isfinite(per_lead(rec)).all()


@pytest.mark.parametrize("record,match", [
    (dict(signal=np.full((12, 100), np.nan)), "rec-1.*NaN"),
    (dict(signal=np.zeros((12, 0))), "rec-1.*shape"),
    (dict(signal=np.zeros(100)), "rec-1.*shape"),
    (dict(fs=0.0), "rec-1.*sampling rate"),
    (dict(fs=None), "rec-1.*sampling rate"),
    (dict(leads=("I", "II")), "rec-1"),
])
def test_bad_records_raise_bad_record_error(record, match):
  rec = {**_record(np.zeros((12, 100))), **record}
  with pytest.raises(data.BadRecordError, match=match) as e:
    data.st_mem_preprocessing().prepare(rec)
  assert e.value.record_id == "rec-1"


def test_bad_record_error_pickles():
  import pickle
  err = pickle.loads(pickle.dumps(data.BadRecordError("r9", "broken")))
  assert err.record_id == "r9" and "r9" in str(err) and err.reason == "broken"
  assert isinstance(err, ValueError)


def test_transforms_have_no_jax():
  import sys
  for mod in ("leads", "specs", "sources", "synthetic", "transforms"):
    src = open(sys.modules[f"ecgjax.data.{mod}"].__file__).read()
    assert "import jax" not in src and "from jax" not in src, mod
  assert transforms.__name__ == "ecgjax.data.transforms"
