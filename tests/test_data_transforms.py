"""Per-record transforms and the Preprocessing input contract."""

import dataclasses
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


@pytest.mark.parametrize("method", ["fft", "poly", "linear", "linear_span"])
@pytest.mark.parametrize("fs_in,fs_out", [(500, 250), (250, 500), (400, 250),
                                          (360, 250)])
def test_resample_preserves_length_in_seconds_and_frequency(method, fs_in, fs_out):
  x = _sine(7.0, fs_in, 10)
  y = data.resample(x, fs_in, fs_out, method)
  n, m = x.shape[-1], y.shape[-1]
  assert y.shape == (2, 10 * fs_out) and y.dtype == np.float32
  np.testing.assert_allclose(_dominant_freq(y, fs_out), 7.0, atol=0.11)
  t = np.arange(m) / fs_out
  if method in ("linear", "linear_span"):
    # Both linear grids put the first and last input sample on the first and last output
    # sample: output j reads input position j (n - 1) / (m - 1) (fairseq-signals, ECGFounder).
    t = np.arange(m) * (n - 1) / (m - 1) / fs_in
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
  with pytest.raises(ValueError, match="unknown Preprocessing keys.*'wavelet'"):
    data.Preprocessing.from_dict({**d, "wavelet": "db4"})
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
  import ecgjax.data.augment  # noqa: F401  (imported so its source is checked)
  for mod in ("ecgjax.leads", "ecgjax.contract", "ecgjax.data.specs", "ecgjax.data.sources",
              "ecgjax.data.formats.synthetic", "ecgjax.data.transforms", "ecgjax.data.filters",
              "ecgjax.data.augment"):
    src = open(sys.modules[mod].__file__).read()
    assert "import jax" not in src and "from jax" not in src, mod
  assert transforms.__name__ == "ecgjax.data.transforms"


# --- Filters and presets against scipy on a real PTB-XL record --------------

_PTBXL_REC = "data/ptbxl/records500/00000/00001_hr"


@pytest.fixture(scope="module")
def ptbxl(shared_dir):
  """PTB-XL 00001_hr read directly: (12, 5000) float32 mV at 500 Hz, lead names."""
  dat = shared_dir / f"{_PTBXL_REC}.dat"
  hea = shared_dir / f"{_PTBXL_REC}.hea"
  if not (dat.exists() and hea.exists()):
    pytest.skip(f"{dat} not found")
  lines = hea.read_text().strip().splitlines()
  n_leads, fs, n = (int(v) for v in lines[0].split()[1:4])
  names = [line.split()[-1] for line in lines[1:1 + n_leads]]
  # WFDB format 16: little-endian int16, samples interleaved across leads;
  # gain 1000 ADC units per mV and zero baseline in this header.
  assert all(" 16 1000.0(0)/mV " in line for line in lines[1:1 + n_leads])
  raw = np.fromfile(dat, "<i2").reshape(n, n_leads).T
  return raw.astype(np.float32) / 1000.0, tuple(names), float(fs)


def test_real_record_reads_sensibly(ptbxl):
  x, names, fs = ptbxl
  assert x.shape == (12, 5000) and fs == 500.0
  assert data.parse_leads(names) == data.LEADS_12
  assert 0.02 < np.abs(x).max() < 10  # mV, not ADC units.


@pytest.mark.parametrize("order", [4, 5])
def test_bandpass_matches_scipy_sosfiltfilt_on_real_record(ptbxl, order):
  from scipy import signal as sps
  x, _, fs = ptbxl
  x64 = x.astype(np.float64)
  hp = sps.butter(order, 0.67, "highpass", fs=fs, output="sos")
  lp = sps.butter(order, 40.0, "lowpass", fs=fs, output="sos")
  ref = sps.sosfiltfilt(lp, sps.sosfiltfilt(hp, x64, axis=-1), axis=-1)
  np.testing.assert_allclose(data.bandpass(x64, fs, 0.67, 40.0, order), ref,
                             atol=1e-12)
  y = data.bandpass(x, fs, 0.67, 40.0, order)
  assert y.dtype == np.float32
  np.testing.assert_allclose(y, ref, atol=1e-6)
  # The order is honoured: the other order is measurably different.
  other = data.bandpass(x64, fs, 0.67, 40.0, 9 - order)
  assert np.abs(other - ref).max() > 1e-3


@pytest.mark.parametrize("f0", [50.0, 60.0])
def test_notch_matches_scipy_filtfilt_iirnotch_on_real_record(ptbxl, f0):
  from scipy import signal as sps
  x, _, fs = ptbxl
  b, a = sps.iirnotch(f0, 30.0, fs=fs)
  ref = sps.filtfilt(b, a, x.astype(np.float64), axis=-1)
  y = transforms.notch(x, fs, f0, 30.0)
  assert y.dtype == np.float32 and y.shape == x.shape
  np.testing.assert_allclose(y, ref, atol=1e-6)
  assert np.isfinite(transforms.notch(x[:, :5], fs, f0)).all()  # Short record.
  with pytest.raises(ValueError, match="fs/2"):
    transforms.notch(x, 100.0, 50.0)


@pytest.mark.parametrize("fs_out,up,down", [(250.0, 1, 2), (360.0, 18, 25),
                                            (1000.0, 2, 1)])
def test_resample_matches_scipy_on_real_record(ptbxl, fs_out, up, down):
  from scipy import signal as sps
  x, _, fs = ptbxl
  m = int(5000 * fs_out / fs)
  fft = data.resample(x, fs, fs_out, "fft")
  np.testing.assert_allclose(fft, sps.resample(x, m, axis=-1), atol=1e-5)
  poly = data.resample(x, fs, fs_out, "poly")
  assert poly.shape == (12, m) and poly.dtype == np.float32
  np.testing.assert_allclose(poly, sps.resample_poly(x.astype(np.float64), up,
                                                     down, axis=-1), atol=1e-5)


def test_median_baseline_matches_scipy_on_real_record(ptbxl):
  from scipy import ndimage
  from scipy import signal as sps
  x, _, fs = ptbxl
  w = transforms.median_window(fs, 0.4)
  assert w == 201 and transforms.median_window(250, 0.4) == 101
  base = transforms.median_baseline(x, w)
  np.testing.assert_array_equal(
      base, ndimage.median_filter(x, size=(1, w), mode="reflect"))
  # scipy.signal.medfilt zero-pads: same values away from the edges.
  inner = slice(w // 2, -(w // 2))
  np.testing.assert_array_equal(base[:, inner],
                                sps.medfilt(x, (1, w))[:, inner])
  y = transforms.remove_baseline(x, fs, 0.4)
  assert y.dtype == np.float32
  np.testing.assert_allclose(y, x - base, atol=1e-6)
  # Records shorter than the window still work (ndimage semantics).
  np.testing.assert_array_equal(
      transforms.median_baseline(x[:, :50], w),
      ndimage.median_filter(x[:, :50], size=(1, w), mode="reflect"))
  with pytest.raises(ValueError, match="odd"):
    transforms.median_baseline(x, 200)


def test_ecgfounder_prepare_is_scipy_pipeline_in_order(ptbxl):
  from scipy import signal as sps
  x, names, fs = ptbxl
  pp = data.Preprocessing.from_dict(transforms.preset("ecgfounder").to_dict())
  y, mask = pp.prepare(_record(x, fs, names))
  assert y.shape == (12, 5000) and y.dtype == np.float32 and mask.all()
  # notch, ONE band-pass b/a design, medfilt baseline (zero-padded edges), global z-score
  # with std + 1e-8 over the record (SPEC section 10).
  ref = sps.filtfilt(*sps.iirnotch(50.0, 30.0, fs=fs), x.astype(np.float64))
  ref = sps.filtfilt(*sps.butter(4, [0.67, 40.0], btype="bandpass", fs=fs), ref)
  ref = ref - np.stack([sps.medfilt(lead, 201) for lead in ref])
  ref = (ref - ref.mean()) / (ref.std() + 1e-8)
  np.testing.assert_allclose(y, ref, atol=1e-5)
  np.testing.assert_array_equal(pp(_record(x, fs, names)), y)


def test_st_mem_prepare_on_real_record(ptbxl):
  from scipy import signal as sps
  x, names, fs = ptbxl
  y, _ = data.st_mem_preprocessing().prepare(_record(x, fs, names))
  ref = sps.resample(x, 2500, axis=-1).astype(np.float64)
  for kind, cut in (("highpass", 0.67), ("lowpass", 40.0)):
    ref = sps.sosfiltfilt(sps.butter(5, cut, kind, fs=250, output="sos"), ref)
  np.testing.assert_allclose(y, ref, atol=1e-5)


def _amp_at(y, freq, fs):
  """Per-lead amplitude of the `freq` component (least squares on sin/cos)."""
  t = np.arange(y.shape[-1]) / fs
  basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], 1)
  coef, *_ = np.linalg.lstsq(basis, y.T.astype(np.float64), rcond=None)
  return np.hypot(*coef)


def _band_energy(y, fs, lo, hi):
  spec = np.abs(np.fft.rfft(y, axis=-1)) ** 2
  f = np.fft.rfftfreq(y.shape[-1], 1 / fs)
  return spec[:, (f >= lo) & (f <= hi)].sum(axis=-1)


def test_ecgfounder_removes_hum_and_wander_keeps_qrs(ptbxl):
  x, names, fs = ptbxl
  t = np.arange(x.shape[-1]) / fs
  hum = 0.2 * np.sin(2 * np.pi * 50 * t + 1.0)  # 0.2 mV of mains.
  wander = 1.0 * np.sin(2 * np.pi * 0.3 * t + 0.4)  # 1 mV of breathing.
  dirty = (x + hum + wander).astype(np.float32)
  # In mV: the preset's record-level z-score is switched off for the amplitude checks.
  pp = dataclasses.replace(transforms.ecgfounder_preprocessing(), standardize=None)
  y, _ = pp.prepare(_record(dirty, fs, names))
  clean, _ = pp.prepare(_record(x, fs, names))
  assert (_amp_at(dirty, 50, fs) > 0.19).all()
  assert (_amp_at(y, 50, fs) < 0.002).all()  # > 40 dB down.
  assert (_amp_at(y, 0.3, fs) < 0.01).all()
  # Away from the edge transients (0.5 s) the output is the clean record's
  # own output to within 6% rms and 40 uV (the wander was 1 mV).
  inner = slice(250, -250)
  rms = np.sqrt((clean[:, inner] ** 2).mean(-1))
  assert (np.sqrt(((y - clean)[:, inner] ** 2).mean(-1)) < 0.06 * rms).all()
  assert np.abs(y - clean)[:, inner].max() < 0.04
  # QRS energy (8-30 Hz) survives: within 7% of the raw record's (away from the edges, where
  # medfilt's zero padding makes the baseline jump, as in ECGFounder's own code).
  ratio = _band_energy(y[:, inner], fs, 8, 30) / _band_energy(x[:, inner], fs, 8, 30)
  assert ((ratio > 0.93) & (ratio < 1.07)).all(), ratio
  # A 60 Hz preset for North-American data removes 60 Hz instead.
  us = dataclasses.replace(transforms.ecgfounder_preprocessing(mains=60.0), standardize=None)
  y60, _ = us.prepare(_record(
      (x + 0.2 * np.sin(2 * np.pi * 60 * t)).astype(np.float32), fs, names))
  assert (_amp_at(y60, 60, fs) < 0.002).all()


def test_presets_and_new_fields():
  assert sorted(transforms.PRESETS) == ["ecg_fm", "ecgfounder", "st_mem"]
  assert transforms.preset("st_mem") == data.st_mem_preprocessing()
  assert transforms.preset("ecg_fm") == data.ecg_fm_preprocessing()
  with pytest.raises(ValueError, match="ecg_fm, ecgfounder, st_mem"):
    transforms.preset("stmem")
  fo = transforms.preset("ecgfounder", leads=("I", "II"))
  assert fo.leads == ("I", "II")
  assert (fo.fs, fo.samples, fo.bandpass, fo.filter_order, fo.notch, fo.notch_q,
          fo.baseline_window_s, fo.standardize, fo.resample_method) == (
              500.0, 5000, (0.67, 40.0), 4, 50.0, 30.0, 0.4, "global", "linear_span")
  assert (fo.bandpass_design, fo.baseline_method, fo.standardize_scope, fo.standardize_eps,
          fo.head_s, fo.views) == ("butter_ba", "medfilt", "record", 1e-8, 10.0, "crops")
  fm = transforms.preset("ecg_fm")
  assert (fm.standardize_scope, fm.views, fm.resample_method) == ("record", "segments", "linear")
  d = json.loads(json.dumps(fo.to_dict()))
  assert data.Preprocessing.from_dict(d) == fo
  # An export written before notch/baseline (or the reference-fidelity fields) existed still
  # loads, with the behaviour it had.
  old = data.st_mem_preprocessing().to_dict()
  for key in ("notch", "notch_q", "baseline_window_s", "bandpass_design", "baseline_method",
              "standardize_scope", "standardize_eps", "head_s", "views"):
    del old[key]
  loaded = data.Preprocessing.from_dict(old)
  assert loaded == data.st_mem_preprocessing()
  assert loaded.notch is None and loaded.baseline_window_s is None
  for bad in ({"notch": 125.0}, {"notch": 0.0}, {"notch_q": 0.0},
              {"baseline_window_s": 0.0}, {"resample_method": "sinc"},
              {"bandpass_design": "fir"}, {"baseline_method": "mean"},
              {"standardize_scope": "batch"}, {"views": "all"}, {"head_s": 0.0},
              {"standardize_eps": -1.0},
              {"bandpass": (0.0, 40.0), "bandpass_design": "butter_ba"}):
    with pytest.raises(ValueError):
      data.Preprocessing(fs=250, samples=100, **bad)


def test_preprocessing_pickles_and_reproduces():
  import pickle
  rec = data.open_source("synthetic:1?fs=400")[0]
  pp = transforms.ecgfounder_preprocessing()
  clone = pickle.loads(pickle.dumps(pp))
  assert clone == pp
  a = pp(rec, np.random.default_rng(3))
  np.testing.assert_array_equal(a, clone(rec, np.random.default_rng(3)))
  assert a.shape == (12, 5000) and a.dtype == np.float32 and np.isfinite(a).all()


def test_segments_drop_the_remainder():
  x = np.arange(3 * 11, dtype=np.float32).reshape(3, 11)
  s = transforms.segments(x, 4)
  assert s.shape == (2, 3, 4)
  np.testing.assert_array_equal(s[0], x[:, 0:4])
  np.testing.assert_array_equal(s[1], x[:, 4:8])
  assert transforms.segments(x, 12).shape == (0, 3, 12)
  assert transforms.segments(x, 11).shape == (1, 3, 11)
  with pytest.raises(ValueError):
    transforms.segments(x, 0)


def test_ecg_fm_segments_of_real_record(ptbxl):
  x, names, fs = ptbxl
  pp = data.ecg_fm_preprocessing()
  segs = pp.segments(_record(x, fs, names))
  assert segs.shape == (2, 12, 2500) and segs.dtype == np.float32
  # fairseq-signals z-scores the WHOLE record per lead, then cuts: segments are not
  # re-standardised, so each has its own mean/std around 0/1.
  whole = data.standardize(x, "per_lead")
  np.testing.assert_allclose(segs[1], whole[:, 2500:], atol=1e-6)
  np.testing.assert_allclose(np.concatenate(list(segs), -1).mean(-1), 0, atol=1e-5)
  assert not np.allclose(segs[1], data.standardize(x[:, 2500:], "per_lead"), atol=1e-3)
  short = pp.segments(_record(x[:, :2000], fs, names))
  assert short.shape == (0, 12, 2500) and short.dtype == np.float32
