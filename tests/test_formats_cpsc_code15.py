"""The `cpsc2018:` (MATLAB struct) and `code15:` (HDF5) readers, and auto detection."""

import os
import pickle

import numpy as np
import pytest

from ecgjax import data
from tests import format_fixtures as ff


@pytest.fixture(scope="module")
def cpsc_dir(shared_dir):
  root = shared_dir / "data" / "cpsc2018"
  if not root.is_dir():
    pytest.skip(f"{root} not found: shared CPSC 2018 files are not on this machine")
  return root


def test_cpsc_real_files(cpsc_dir):
  src = data.open_source(str(cpsc_dir))  # auto -> cpsc2018
  assert type(src).__name__ == "Cpsc2018Source"
  assert len(src) == 10 and src.fs == 500.0 and src.label_names == ()
  meta = src.metadata()
  assert list(meta["record_id"]) == [f"A{n}" for n in range(1980, 1990)]
  lengths = []
  for i in range(len(src)):
    rec = src[i]
    assert rec["signal"].shape[0] == 12 and rec["signal"].dtype == np.float32
    assert np.isfinite(rec["signal"]).all() and rec["leads"] == data.LEADS_12
    assert rec["record_id"] == rec["patient_id"] == meta["record_id"][i]
    lengths.append(rec["signal"].shape[1])
  assert min(lengths) >= 5000 and max(lengths) <= 27157 and len(set(lengths)) > 1
  assert max(lengths) == 27157  # A1988, the longest
  # Millivolts: a normal QRS peaks around 1 mV, far from 1000 (uV) or 0.001 (V).
  assert 0.2 < np.abs(src[0]["signal"]).max() < 10
  assert pickle.loads(pickle.dumps(src))[0]["signal"].shape == (12, 5000)


def test_cpsc_reference_labels_and_bad_files(tmp_path):
  rng = np.random.default_rng(0)
  root = tmp_path / "cpsc"
  for name in ("A0001", "A0002"):
    ff.write_cpsc(root, name, rng.normal(size=(12, 600)))
  with open(root / "REFERENCE.csv", "w") as f:
    f.write("Recording,First_label,Second_label,Third_label\nA0001,1,,\nA0002,2,9,\n")
  src = data.open_source(f"cpsc2018:{root}")
  assert src.label_names[:2] == ("Normal", "AF") and len(src.label_names) == 9
  np.testing.assert_array_equal(src.metadata()["labels"][1], [0, 1, 0, 0, 0, 0, 0, 0, 1])
  np.testing.assert_array_equal(src[1]["labels"], src.metadata()["labels"][1])
  assert data.open_source(f"cpsc2018:{root}?reference=none").label_names == ()
  nan = rng.normal(size=(12, 600))
  nan[7, 3] = np.nan
  ff.write_cpsc(tmp_path / "bad", "nan", nan)
  ff.write_cpsc(tmp_path / "bad", "short", np.zeros((12, 0)))
  ff.write_cpsc(tmp_path / "bad", "wide", rng.normal(size=(600, 12)))
  bad = data.open_source(f"cpsc2018:{tmp_path / 'bad'}")
  with pytest.raises(data.BadRecordError,
                     match=r"nan\.mat: 1 NaN or inf samples, first in lead V2"):
    bad[0]
  with pytest.raises(data.BadRecordError, match=r"short\.mat: zero-length"):
    bad[1]
  with pytest.raises(data.BadRecordError, match=r"wide\.mat: ECG\.data has shape \(600, 12\)"):
    bad[2]
  os.remove(tmp_path / "bad" / "nan.mat")
  with pytest.raises(data.BadRecordError, match=r"missing file .*nan\.mat"):
    bad[0]
  ff.write_cpsc(root, "A0003", rng.normal(size=(12, 600)))
  with pytest.raises(ValueError, match="no row for 1 of 3 recordings"):
    data.open_source(f"cpsc2018:{root}")
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match=r"no \.mat files under .*empty"):
    data.open_source(f"cpsc2018:{tmp_path / 'empty'}")


def _tracing(n_active: int, seed: int, total: int = 64) -> np.ndarray:
  """(total, 12) with n_active nonzero samples centred in zero padding."""
  x = np.zeros((total, 12), np.float32)
  pad = (total - n_active) // 2
  x[pad:pad + n_active] = np.random.default_rng(seed).normal(size=(n_active, 12)) + 3.0
  return x


@pytest.fixture
def code15_dir(tmp_path):
  pytest.importorskip("h5py")
  root = tmp_path / "code15"
  part0 = np.stack([_tracing(40, 1), _tracing(64, 2), np.zeros((64, 12), np.float32)])
  part1 = np.stack([_tracing(50, 3), np.zeros((64, 12), np.float32)])
  ff.write_code15(root, [(part0, [101, 102, 0]), (part1, [201, 0])], exams=[
      {"exam_id": 101, "patient_id": 7, "RBBB": "True"},
      {"exam_id": 102, "patient_id": 7, "AF": "True", "ST": "True"},
      {"exam_id": 201, "patient_id": 8.0},
  ])
  return root


def test_code15_directory(code15_dir):
  src = data.open_source(str(code15_dir))  # auto -> code15
  assert type(src).__name__ == "Code15Source"
  assert len(src) == 3 and src.fs == 400.0  # the exam_id 0 rows are skipped
  assert src.label_names == ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")
  meta = src.metadata()
  assert list(meta["record_id"]) == ["101", "102", "201"]
  assert list(meta["patient_id"]) == ["7", "7", "8"]
  np.testing.assert_array_equal(meta["labels"], [[0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1],
                                                 [0, 0, 0, 0, 0, 0]])
  lengths = [40, 64, 50]
  originals = [_tracing(40, 1), _tracing(64, 2), _tracing(50, 3)]
  for i in range(3):
    rec = src[i]
    assert rec["signal"].shape == (12, lengths[i]) and rec["leads"] == data.LEADS_12
    pad = (64 - lengths[i]) // 2
    np.testing.assert_array_equal(rec["signal"], originals[i][pad:pad + lengths[i]].T)
    np.testing.assert_array_equal(rec["labels"], meta["labels"][i])
    assert rec["patient_id"] == meta["patient_id"][i]
  # Open handles are dropped on pickling and reopened lazily on the other side.
  clone = pickle.loads(pickle.dumps(src))
  assert clone._handles == {} and clone[2]["record_id"] == "201"
  scaled = data.open_source(f"code15:{code15_dir}?scale=0.5")
  np.testing.assert_allclose(scaled[0]["signal"], src[0]["signal"] * 0.5)


def test_code15_single_file_and_errors(code15_dir, tmp_path):
  part1 = code15_dir / "exams_part1.hdf5"
  src = data.open_source(str(part1))  # auto on a file; exams.csv beside it
  assert len(src) == 1 and src.metadata()["patient_id"][0] == "8"
  os.remove(code15_dir / "exams.csv")
  src = data.open_source(f"code15:{code15_dir}")
  assert src.label_names == () and list(src.metadata()["patient_id"]) == ["101", "102", "201"]
  import h5py  # pylint: disable=g-import-not-at-top
  with h5py.File(part1, "a") as h:
    h["exam_id"][1] = 202  # The all-zero row now claims to be an exam.
  src = data.open_source(f"code15:{code15_dir}")
  with pytest.raises(data.BadRecordError, match=r"exams_part1\.hdf5, row 1: all-zero"):
    src[3]
  with pytest.raises(ValueError, match="no such file or directory"):
    data.open_source(f"code15:{tmp_path / 'absent.hdf5'}")
  with pytest.raises(ValueError, match="no such csv"):
    data.open_source(f"code15:{code15_dir}?csv={tmp_path / 'x.csv'}")


def test_auto_detection_picks_one_format(tmp_path, code15_dir):
  ff.write_ptbxl(tmp_path / "p", [{"ecg_id": 1, "patient_id": 1, "scp_codes": {}, "fold": 1}])
  ff.write_wfdb(tmp_path / "w" / "sub", "r", ff.random_digital(12, 10))
  ff.write_wfdb(tmp_path / "ch", "A1", ff.random_digital(12, 10), ext="mat")
  ff.write_cpsc(tmp_path / "c", "A1", np.ones((12, 10)))
  expect = {"p": "ptbxl", "w": "wfdb", "ch": "wfdb", "c": "cpsc2018"}
  for name, fmt in expect.items():
    assert data.open_source(str(tmp_path / name)).spec.format == fmt, name
    assert data.open_source(f"auto:{tmp_path / name}").spec.format == fmt, name
  assert data.open_source(str(code15_dir)).spec.format == "code15"
  assert data.open_source(str(code15_dir / "exams_part0.hdf5")).spec.format == "code15"
