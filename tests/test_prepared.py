"""Prepared format: round trip, lazy metadata, bad records, atomic writes, pipeline equivalence."""

import json
import os
import pickle
import shutil

from absl import flags
import numpy as np
import pytest

from ecgjax import data
from ecgjax.data import prepare as prepare_lib
from ecgjax.data.formats import prepared as fmt

flags.FLAGS.mark_as_parsed()  # grain worker processes read absl flags.

PP = data.Preprocessing(fs=250.0, samples=500, bandpass=(0.67, 40.0))
SPEC = "synthetic:200?seed=1&seconds=4&fs=500"
# float16 keeps 11 significant bits: |error| <= 2^-11 |x|.
F16 = dict(rtol=2 ** -10, atol=1e-4)


class FlakySource(data.SyntheticSource):
  """Synthetic records with NaN samples, unreadable records and a reader crash."""

  def __init__(self, n, nan=(), unreadable=(), crash=(), scale=1.0):
    super().__init__(n, seed=2, seconds=2.0)
    self.nan, self.unreadable, self.crash = nan, unreadable, crash
    self.scale = scale

  def __getitem__(self, index):
    if index in self.unreadable:
      raise data.BadRecordError(self.record_id(index), "truncated file")
    if index in self.crash:
      raise OSError("disk said no")
    rec = super().__getitem__(index)
    rec["signal"] *= self.scale
    if index in self.nan:
      rec["signal"][1, 5] = np.nan
    return rec


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prep") / "syn")
  meta = prepare_lib.prepare(SPEC, out, PP, workers=0, shard_size=64,
                             progress=False)
  return out, meta


def test_round_trip_equals_prepare(prepared):
  out, meta = prepared
  src, got = data.open_source(SPEC), data.open_source(f"prepared:{out}")
  assert isinstance(got, fmt.PreparedSource) and len(got) == 200
  assert meta["counts"] == {"source_records": 200, "records": 200, "bad": 0,
                            "shards": 4, "samples": 200 * 1000}
  assert meta["preprocessing"] == PP.to_dict() and meta["dtype"] == "float16"
  assert got.fs == 250.0 and got.leads == PP.leads
  assert got.label_names == src.label_names
  for i in range(0, 200, 13):
    want, mask = PP.prepare(src[i])
    rec = got[i]
    assert rec["signal"].dtype == np.float32 and rec["signal"].shape == (12, 1000)
    np.testing.assert_allclose(rec["signal"], want, **F16)
    np.testing.assert_array_equal(rec["lead_mask"], mask)
    np.testing.assert_array_equal(rec["labels"], src[i]["labels"])
    assert rec["record_id"] == src[i]["record_id"]
    assert rec["patient_id"] == src[i]["patient_id"] and rec["fold"] == src[i]["fold"]
    assert rec["fs"] == 250.0 and rec["prepared"] == PP.to_dict()


def test_metadata_reads_no_samples(prepared, tmp_path):
  out, _ = prepared
  bare = tmp_path / "bare"
  shutil.copytree(out, bare, ignore=shutil.ignore_patterns("shard-*"))
  got = data.open_source(f"prepared:{bare}")
  meta, want = got.metadata(), data.open_source(SPEC).metadata()
  assert meta.keys() == want.keys()
  for k in want:
    np.testing.assert_array_equal(meta[k], want[k])
  assert meta["record_id"].dtype.kind == "U" and meta["fold"].dtype == np.int64
  with pytest.raises(data.BadRecordError, match="missing shard"):
    got[0]  # The samples really are elsewhere (a bad record naming the shard, not a crash).
  sub = data.open_source(f"prepared:{out}?folds=1-3")
  assert len(sub) == int(np.isin(want["fold"], [1, 2, 3]).sum())


def test_random_access_and_pickling(prepared):
  out, _ = prepared
  got = data.open_source(out)  # auto: detected by meta.json.
  assert isinstance(got, fmt.PreparedSource)
  order = np.random.default_rng(0).permutation(200)[:40]
  first = {int(i): got[int(i)]["signal"] for i in order}
  fresh = pickle.loads(pickle.dumps(got))
  assert len(pickle.dumps(got)) < 20_000  # No samples or maps in the pickle.
  for i in order[::-1]:
    np.testing.assert_array_equal(fresh[int(i)]["signal"], first[int(i)])
  np.testing.assert_array_equal(got[-1]["signal"], got[199]["signal"])
  with pytest.raises(IndexError):
    got[200]
  x, mask = got.signal(5)
  assert x.dtype == np.float16 and x.shape == (12, 1000) and mask.shape == (12,)


def test_parallel_prepare_gives_the_same_records(prepared, tmp_path):
  out, _ = prepared
  meta = prepare_lib.prepare(SPEC, tmp_path / "par", PP, workers=2,
                             shard_size=4096, progress=False)
  assert meta["counts"]["records"] == 200 and meta["counts"]["shards"] >= 2
  a, b = data.open_source(out), data.open_source(str(tmp_path / "par"))
  for i in (0, 63, 64, 130, 199):
    np.testing.assert_array_equal(a[i]["signal"], b[i]["signal"])
    assert a[i]["record_id"] == b[i]["record_id"]


def test_bad_records_are_listed_in_meta(tmp_path):
  src = FlakySource(30, nan=(3,), unreadable=(11,), crash=(20,))
  out = tmp_path / "flaky"
  meta = prepare_lib.prepare(src, out, PP, workers=0, progress=False)
  with open(out / "meta.json") as f:
    assert json.load(f) == meta
  bad = {b["record_id"]: b["reason"] for b in meta["bad_records"]}
  assert set(bad) == {"syn-2-000003", "syn-2-000011", "syn-2-000020"}
  assert "NaN" in bad["syn-2-000003"] and bad["syn-2-000011"] == "truncated file"
  assert bad["syn-2-000020"] == "OSError: disk said no"
  assert meta["counts"]["records"] == 27 and meta["counts"]["bad"] == 3
  got = data.open_source(f"prepared:{out}")
  assert "syn-2-000003" not in set(got.metadata()["record_id"])
  assert got[3]["record_id"] == "syn-2-000004"


def test_float16_range_guard(tmp_path):
  # Values in nV (x 1e6) overflow float16: bad, with the way out.
  src = FlakySource(4, scale=1e6)
  with pytest.raises(ValueError, match="all 4 records are bad.*float32"):
    prepare_lib.prepare(src, tmp_path / "f16", PP, workers=0, progress=False)
  assert not os.listdir(tmp_path)
  meta = prepare_lib.prepare(src, tmp_path / "f32", PP, workers=0,
                             dtype="float32", progress=False)
  assert meta["counts"]["records"] == 4
  rec = data.open_source(str(tmp_path / "f32"))[1]
  np.testing.assert_allclose(rec["signal"], PP.prepare(src[1])[0])


def test_refuses_to_overwrite_and_leaves_nothing_on_failure(prepared, tmp_path):
  out, _ = prepared
  with pytest.raises(FileExistsError, match="overwrite"):
    prepare_lib.prepare(SPEC, out, PP, workers=0, progress=False)
  dst = tmp_path / "again"
  prepare_lib.prepare("synthetic:5?seconds=2", dst, PP, workers=0, progress=False)
  meta = prepare_lib.prepare("synthetic:7?seconds=2", dst, PP, workers=0,
                             overwrite=True, progress=False)
  assert meta["counts"]["records"] == 7 and len(data.open_source(str(dst))) == 7
  # Re-preparing prepared data with another contract fails as a whole, atomically.
  other = data.Preprocessing(fs=250.0, samples=500, bandpass=(0.5, 40.0))
  with pytest.raises(fmt.PreparedMismatchError, match="bandpass"):
    prepare_lib.prepare(f"prepared:{out}", tmp_path / "chain", other, workers=0,
                        progress=False)
  assert sorted(os.listdir(tmp_path)) == ["again"]


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_pipeline_on_prepared_matches_the_source(prepared):
  out, _ = prepared
  src, got = data.open_source(SPEC), data.open_source(out)
  ref = _take(data.train_iterator(src, PP, global_batch_size=8, seed=4), 3)
  new = _take(data.train_iterator(got, PP, global_batch_size=8, seed=4), 3)
  for a, b in zip(ref, new):
    assert a.keys() == b.keys()
    for k in ("index", "labels", "lead_mask"):
      np.testing.assert_array_equal(a[k], b[k])
    # z-scored windows: float16 storage moves them by < 0.01.
    np.testing.assert_allclose(a["signal"], b["signal"], atol=1e-2)
  ev_ref = next(data.eval_batches(src, PP, batch_size=4, n_crops=2))
  ev_new = next(data.eval_batches(got, PP, batch_size=4, n_crops=2))
  np.testing.assert_allclose(ev_ref["signal"], ev_new["signal"], atol=1e-2)
  # Crop length and standardisation run online: they may differ from the preparation.
  online = data.Preprocessing(fs=250.0, samples=300, bandpass=(0.67, 40.0),
                              standardize="per_lead", leads=("V1", "I"))
  b = next(data.train_iterator(got, online, global_batch_size=4, seed=0))
  assert b["signal"].shape == (4, 2, 300)
  np.testing.assert_allclose(b["signal"].std(axis=-1), 1.0, rtol=1e-3)


def test_contract_mismatch_is_an_error(prepared, tmp_path):
  got = data.open_source(prepared[0])
  for other, key in (
      (data.Preprocessing(fs=500.0, samples=500, bandpass=(0.67, 40.0)), "fs"),
      (data.Preprocessing(fs=250.0, samples=500, bandpass=None), "bandpass"),
      (data.Preprocessing(fs=250.0, samples=500, bandpass=(0.67, 40.0),
                          filter_order=4), "filter_order")):
    it = data.train_iterator(got, other, global_batch_size=4, seed=0,
                             read_threads=0)
    with pytest.raises(fmt.PreparedMismatchError, match=key):
      next(it)
  assert fmt.prepared_mismatch(PP.to_dict(), PP) == []
  # Leads the preparation dropped cannot come back.
  limb = data.Preprocessing(fs=250.0, samples=500, bandpass=(0.67, 40.0),
                            leads=("I", "II"))
  prepare_lib.prepare("synthetic:3?seconds=2", tmp_path / "limb", limb,
                      workers=0, progress=False)
  rec = data.open_source(str(tmp_path / "limb"))[0]
  assert fmt.prepared_mismatch(rec["prepared"], PP) == ["leads"]
  with pytest.raises(fmt.PreparedMismatchError, match="leads"):
    fmt.prepare_record(PP, rec)
