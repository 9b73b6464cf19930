"""Broken files never crash a run and never hide a good record: each test builds the broken
file. Prepared shards truncated or missing, a corrupt meta.json, empty and truncated .npy files,
.mat files of other layouts beside CPSC 2018 records, an unreadable CODE-15 part, and the lead
summary of `inspect` from the lead masks."""

import json
import os
import pathlib
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from ecgjax import data
from ecgjax.data import inspect as inspect_lib
from ecgjax.data import prepare as prepare_lib
from tests import format_fixtures as ff

flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags.

REPO = pathlib.Path(__file__).resolve().parents[1]
PP = data.Preprocessing(fs=250.0, samples=500, bandpass=(0.67, 40.0))


def _cli(*args, timeout=300):
  env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "ecgjax.data", *map(str, args)], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture()
def prepared_dir(tmp_path):
  out = tmp_path / "prep"
  prepare_lib.prepare("synthetic:12?seed=71&seconds=4&fs=500", out, PP, workers=0,
                      shard_size=4, progress=False)
  meta = json.loads((out / "meta.json").read_text())
  return out, [s["file"] for s in meta["shards"]]


def test_truncated_and_missing_shards_are_bad_records(prepared_dir):
  out, shards = prepared_dir
  assert len(shards) == 3
  path = out / shards[1]
  path.write_bytes(path.read_bytes()[:200])  # truncated inside the data
  os.remove(out / shards[2])
  src = data.open_source(f"prepared:{out}")
  assert src[0]["signal"].shape[-1] == 1000  # shard 0 reads
  with pytest.raises(data.BadRecordError, match=f"unreadable shard .*{shards[1]}.*truncated"):
    src[5]
  with pytest.raises(data.BadRecordError, match=f"missing shard .*{shards[2]}"):
    src[9]
  # inspect: named and counted, the good shard's records summarised, no traceback.
  summary = inspect_lib.inspect_source(f"prepared:{out}", workers=0, progress=False)
  assert summary["records"] == 4 and summary["bad_count"] == 8
  assert all(shards[1] in b["reason"] or shards[2] in b["reason"] for b in summary["bad"])
  # Training: the pipeline skips and counts them (the stream is endless: 8 of 12 are bad).
  it = data.train_iterator(src, PP, global_batch_size=4, seed=0, max_bad_fraction=0.99)
  for _ in range(3):
    assert next(it)["signal"].shape == (4, 12, 500)
  assert it.bad_records >= 8 and it.records_seen >= 12
  assert any(shards[1] in why or shards[2] in why for _, why in it.bad_examples)
  # Past the limit it stops with an error naming examples, not a traceback from numpy.
  it = data.train_iterator(src, PP, global_batch_size=4, seed=0, max_bad_fraction=0.0)
  with pytest.raises(data.TooManyBadRecordsError, match="shard"):
    next(it)


def test_shard_shorter_than_its_records_says_so(prepared_dir):
  out, shards = prepared_dir
  arr = np.load(out / shards[0])
  np.save(out / shards[0], arr[: arr.size // 2])  # a valid .npy, but half the samples
  src = data.open_source(f"prepared:{out}")
  with pytest.raises(data.BadRecordError, match="holds 0 of this record's|truncated"):
    src[3]


def test_corrupt_meta_json_is_one_clear_error(prepared_dir):
  out, _ = prepared_dir
  (out / "meta.json").write_text('{"format": "ecgjax-prepared", "format_ver')
  with pytest.raises(ValueError, match="meta.json is corrupt"):
    data.open_source(f"prepared:{out}")
  res = _cli("inspect", f"prepared:{out}")
  assert res.returncode == 2 and "meta.json is corrupt" in res.stderr
  assert "Traceback" not in res.stderr
  (out / "meta.json").write_text('{"format": "ecgjax-prepared", "format_version": 1}')
  with pytest.raises(ValueError, match="meta.json is corrupt: it lacks preprocessing"):
    data.open_source(f"prepared:{out}")


@pytest.mark.parametrize("cut,why", [(0, "empty"), (60, "EOF"), (-100, "truncated")])
def test_empty_or_truncated_npy_is_a_clear_error(tmp_path, cut, why):
  good = tmp_path / "good.npy"
  np.save(good, np.zeros((3, 12, 100), np.float32))
  raw = good.read_bytes()
  bad = tmp_path / "bad.npy"
  bad.write_bytes(raw[:cut] if cut >= 0 else raw[:cut])
  with pytest.raises(ValueError, match=f"bad.npy: cannot read as a .npy array: .*{why}"):
    data.open_source(f"npy:{bad}?fs=100")
  res = _cli("inspect", f"npy:{bad}?fs=100")
  assert res.returncode == 2 and "bad.npy" in res.stderr and "Traceback" not in res.stderr


def test_other_mat_layouts_are_not_cpsc2018_records(tmp_path):
  import scipy.io  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  root = tmp_path / "mixed"
  ff.write_cpsc(root, "A0001", rng.normal(size=(12, 600)))
  ff.write_cpsc(root, "A0002", rng.normal(size=(12, 700)))
  scipy.io.savemat(root / "data_01.mat", {"ecg": rng.normal(size=(5000, 1))})  # CPSC 2019
  scipy.io.savemat(root / "R_01.mat", {"R_peak": np.arange(10)})  # its annotation file
  (root / "A0003.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")  # a broken CPSC file
  src = data.open_source(f"cpsc2018:{root}")
  assert list(src.metadata()["record_id"]) == ["A0001", "A0002", "A0003"]
  assert sorted(src.other_files) == ["R_01", "data_01"]
  assert src[1]["signal"].shape == (12, 700)
  with pytest.raises(data.BadRecordError, match="A0003.mat"):
    src[2]
  # Auto-detection looks for the ECG struct: a CPSC 2019 folder is not taken for CPSC 2018.
  only = tmp_path / "cpsc2019"
  scipy.io.savemat(only / "data_01.mat" if only.mkdir() is None else None,
                   {"ecg": rng.normal(size=(5000, 1))})
  from ecgjax.data.formats import cpsc2018  # pylint: disable=g-import-not-at-top
  assert cpsc2018.detect(str(root)) and not cpsc2018.detect(str(only))
  with pytest.raises(ValueError, match="no .mat file .* holds CPSC 2018's struct 'ECG'.*ecg"):
    data.open_source(f"cpsc2018:{only}")


def test_an_unreadable_code15_part_is_named_and_skipped(tmp_path):
  rng = np.random.default_rng(0)
  tr = rng.normal(size=(2, 4096, 12)).astype(np.float32)
  ff.write_code15(tmp_path, [(tr, np.array([11, 12])), (tr, np.array([21, 22]))])
  part1 = tmp_path / "exams_part1.hdf5"
  part1.write_bytes(part1.read_bytes()[:1000])  # a truncated download
  src = data.open_source(f"code15:{tmp_path}")
  assert list(src.metadata()["record_id"]) == ["11", "12"]
  assert src.skipped_files and "exams_part1.hdf5" in src.skipped_files[0][1]
  assert src[1]["signal"].shape == (12, 4096)
  part0 = tmp_path / "exams_part0.hdf5"
  part0.write_bytes(b"not hdf5")
  with pytest.raises(ValueError, match="no readable part.*exams_part0.*exams_part1"):
    data.open_source(f"code15:{tmp_path}")


def test_inspect_lead_summary_shows_the_leads_records_have(tmp_path):
  d = ff.random_digital(3, 400)
  ff.write_wfdb(tmp_path, "three", d, leads=("I", "II", "V1"))
  ff.write_wfdb(tmp_path, "twelve", ff.random_digital(12, 400))
  summary = inspect_lib.inspect_source(f"wfdb:{tmp_path}", workers=0, progress=False)
  assert summary["leads"] == {"I,II,V1": 1, ",".join(data.LEADS_12): 1}
