"""The built-in synthetic 12-lead ECG data set."""

import numpy as np
import pytest
from scipy import signal as sp_signal
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from ecgjax import data
from ecgjax.data import synthetic


def test_deterministic_and_independent_of_n():
  a = data.open_source("synthetic:20?seed=3")[7]
  b = data.open_source("synthetic:5000?seed=3")[7]
  for key in ("signal", "labels"):
    np.testing.assert_array_equal(a[key], b[key])
  assert a["record_id"] == b["record_id"] == "syn-3-000007"
  c = data.open_source("synthetic:20?seed=4")[7]
  assert not np.array_equal(a["signal"], c["signal"])


def test_record_contract():
  src = data.open_source("synthetic:12?fs=500&seconds=4")
  rec = src[11]
  assert rec["signal"].shape == (12, 2000) and rec["signal"].dtype == np.float32
  assert rec["labels"].shape == (5,) and rec["labels"].dtype == np.float32
  assert rec["fs"] == 500.0 and rec["leads"] == data.LEADS_12
  assert rec["fold"] == 2 and src.label_names == synthetic.LABEL_NAMES
  meta = src.metadata()
  np.testing.assert_array_equal(meta["labels"][11], rec["labels"])
  assert meta["record_id"][11] == rec["record_id"]
  assert meta["patient_id"][11] == rec["patient_id"]
  np.testing.assert_array_equal(meta["fold"], np.arange(12) % 10 + 1)


def test_patients_own_consecutive_records():
  meta = data.open_source("synthetic:600").metadata()
  _, counts = np.unique(meta["patient_id"], return_counts=True)
  assert set(counts) == {1, 2, 3}
  assert meta["patient_id"][0] == meta["patient_id"][1] != meta["patient_id"][2]


def test_einthoven_goldberger_exact():
  for i in range(20):
    x, _, _ = synthetic.generate_record(1, i)
    lead_i, lead_ii, iii, avr, avl, avf = x[:6]
    scale = np.abs(x[:2]).max()
    atol = 1e-6 * scale
    np.testing.assert_allclose(iii, lead_ii - lead_i, rtol=0, atol=atol)
    np.testing.assert_allclose(avr, -(lead_i + lead_ii) / 2, rtol=0, atol=atol)
    np.testing.assert_allclose(avl, lead_i - lead_ii / 2, rtol=0, atol=atol)
    np.testing.assert_allclose(avf, lead_ii - lead_i / 2, rtol=0, atol=atol)


def test_physiological_ranges():
  hrs, limb_qrs, v1_net, v6_net = [], [], [], []
  for i in range(300):
    x, labels, info = synthetic.generate_record(0, i, debug=True)
    hrs.append(info["hr_bpm"])
    clean, peaks = info["clean"], info["r_peaks"]
    peaks = peaks[(peaks > 15) & (peaks < clean.shape[1] - 15)]
    qrs = np.stack([clean[:, p - 12:p + 13] for p in peaks])  # +-50 ms.
    p2p = (qrs.max(-1) - qrs.min(-1)).mean(0)
    limb_qrs.append((p2p[:6].max(), labels[4]))
    if labels[0]:
      net = (qrs.max(-1) + qrs.min(-1)).mean(0)
      v1_net.append(net[6])
      v6_net.append(net[11])
    assert np.abs(x).max() < 6.0  # mV: no runaway amplitudes.
  hrs = np.array(hrs)
  assert hrs.min() >= 35 and hrs.max() <= 190 and 60 < np.median(hrs) < 100
  limb = np.array(limb_qrs)
  assert limb[limb[:, 1] == 1, 0].max() < 0.5  # Low voltage: all limb QRS < 0.5 mV.
  assert np.percentile(limb[limb[:, 1] == 0, 0], 5) > 0.6
  assert 0.7 < np.median(limb[limb[:, 1] == 0, 0]) < 2.5  # QRS ~ 0.5-2 mV.
  # R-wave progression: V1 mostly negative, V6 positive.
  assert np.mean(np.array(v1_net) < 0) > 0.9 and np.mean(np.array(v6_net) > 0) > 0.9


def test_label_distribution():
  labels = data.open_source("synthetic:2000?seed=9").metadata()["labels"]
  freq = labels.mean(0)
  assert 0.35 < freq[0] < 0.45  # NORM.
  assert np.all((freq[1:] > 0.12) & (freq[1:] < 0.22))
  assert 0.04 < np.mean(labels[:, 1:].sum(1) == 2) < 0.12
  np.testing.assert_array_equal(labels[:, 0], labels[:, 1:].sum(1) == 0)


def _features(x: np.ndarray, fs: float) -> np.ndarray:
  """Median-beat template, its per-lead amplitude, and RR irregularity."""
  x = data.bandpass(x, fs, 0.5, 40.0, order=3)
  energy = np.abs(np.diff(x, axis=1)).sum(0)
  peaks, _ = sp_signal.find_peaks(
      energy, distance=int(0.25 * fs), height=0.4 * np.percentile(energy, 99.5))
  pre, post = int(0.25 * fs), int(0.45 * fs)
  inner = peaks[(peaks > pre) & (peaks < x.shape[1] - post)]
  beats = np.stack([x[:, p - pre:p + post] for p in inner])
  template = np.median(beats, axis=0)
  # Baseline from the PR segment, 50 ms before R.
  pr = pre - int(0.05 * fs)
  template -= template[:, pr - 2:pr + 3].mean(axis=1, keepdims=True)
  rr = np.diff(peaks) / fs
  return np.concatenate([
      template[:, ::5].ravel(), np.ptp(template, axis=1),
      [rr.std() / rr.mean(), np.abs(np.diff(rr)).mean() / rr.mean()]])


def test_each_condition_is_linearly_separable():
  src = data.open_source("synthetic:600?seed=11")
  feats = np.stack([_features(src[i]["signal"], src.fs) for i in range(len(src))])
  labels = src.metadata()["labels"]
  scaler = StandardScaler().fit(feats[:400])
  train, test = scaler.transform(feats[:400]), scaler.transform(feats[400:])
  for k, name in enumerate(src.label_names):
    clf = LogisticRegression(C=0.05, max_iter=2000).fit(train, labels[:400, k])
    auc = roc_auc_score(labels[400:, k], clf.predict_proba(test)[:, 1])
    assert auc > 0.9, (name, auc)


@pytest.mark.parametrize("fs", [100.0, 500.0])
def test_other_rates(fs):
  x, _, info = synthetic.generate_record(0, 5, fs=fs, seconds=10)
  assert x.shape == (12, int(10 * fs)) and np.isfinite(x).all()
  assert 40 <= info["hr_bpm"] <= 190
