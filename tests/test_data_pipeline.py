"""grain training stream and eval batches."""

import logging

from absl import flags
import numpy as np
import pytest

from ecgjax import data
from ecgjax.data import pipeline

# grain worker processes read absl flags.
flags.FLAGS.mark_as_parsed()

# Small crops keep the test fast; the filter still runs on every record.
PP = data.Preprocessing(fs=250.0, samples=500, bandpass=(0.67, 40.0))


class NanSource(data.SyntheticSource):
  """Synthetic records, some of them broken (NaN samples or unreadable)."""

  def __init__(self, n, bad=(3,), unreadable=()):
    super().__init__(n, seed=1, seconds=4.0)
    self.bad, self.unreadable = tuple(bad), tuple(unreadable)

  def __getitem__(self, index):
    if index in self.unreadable:
      raise data.BadRecordError(self.record_id(index), "truncated file")
    rec = super().__getitem__(index)
    if index in self.bad:
      rec["signal"][2, 10:20] = np.nan
    return rec


@pytest.fixture(scope="module")
def source():
  return data.open_source("synthetic:40?seed=1&seconds=4")


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  return len(a) == len(b) and all(
      x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
      for x, y in zip(a, b))


def test_batches_and_determinism(source):
  it = data.train_iterator(source, PP, global_batch_size=8, seed=0)
  batches = _take(it, 6)
  b = batches[0]
  assert set(b) == {"signal", "lead_mask", "labels", "index", "patient"}
  assert b["signal"].shape == (8, 12, 500) and b["signal"].dtype == np.float32
  assert b["lead_mask"].shape == (8, 12) and b["lead_mask"].dtype == np.float32
  assert b["labels"].shape == (8, 5) and b["labels"].dtype == np.float32
  assert b["index"].dtype == np.int64
  data.check_batch(b, "train")  # THE schema (data/batch.py), every key, dtype and axis
  # Records of one patient share a key; the key is the hash of the source's patient id.
  for i, p in zip(b["index"], b["patient"]):
    assert p == data.pipeline.patient_key(source[int(i)]["patient_id"])
  # Epoch 1 (5 batches) visits every record once; epoch 2 is reshuffled.
  first = np.concatenate([x["index"] for x in batches[:5]])
  assert sorted(first) == list(range(40))
  again = _take(data.train_iterator(source, PP, global_batch_size=8, seed=0), 6)
  assert _same(batches, again)
  other = _take(data.train_iterator(source, PP, global_batch_size=8, seed=1), 1)
  assert not np.array_equal(other[0]["index"], b["index"])
  # Labels travel with their record.
  meta = source.metadata()
  np.testing.assert_array_equal(b["labels"], meta["labels"][b["index"]])


def test_processes_get_disjoint_shards_of_the_global_batch(source):
  single = _take(data.train_iterator(source, PP, global_batch_size=8, seed=3), 5)
  shards = [_take(data.train_iterator(source, PP, global_batch_size=8, seed=3,
                                      process_index=p, process_count=2), 5)
            for p in range(2)]
  idx = [np.concatenate([b["index"] for b in s]) for s in shards]
  assert not set(idx[0]) & set(idx[1])
  assert sorted(np.concatenate(idx)) == list(range(40))
  for step in range(5):
    local = [s[step] for s in shards]
    assert all(b["signal"].shape[0] == 4 for b in local)
    # Each global batch is the same set of examples (same crops) as with one process.
    got = np.concatenate([b["index"] for b in local])
    assert sorted(got) == sorted(single[step]["index"])
    for b in local:
      for j, i in enumerate(b["index"]):
        k = list(single[step]["index"]).index(i)
        np.testing.assert_array_equal(b["signal"][j], single[step]["signal"][k])
  with pytest.raises(ValueError, match="divisible"):
    data.train_iterator(source, PP, global_batch_size=9, seed=0, process_count=2)


def test_resume_from_state(source):
  it = data.train_iterator(source, PP, global_batch_size=8, seed=0)
  _take(it, 7)  # Into the second epoch.
  state = it.get_state()
  expected = _take(it, 4)
  resumed = data.train_iterator(source, PP, global_batch_size=8, seed=0)
  resumed.set_state(state)
  assert _same(_take(resumed, 4), expected)


def test_workers_match_in_process_and_resume(source):
  ref = _take(data.train_iterator(source, PP, global_batch_size=8, seed=0), 8)
  it = data.train_iterator(source, PP, global_batch_size=8, seed=0,
                           worker_count=2)
  try:
    got = _take(it, 5)
    state = it.get_state()
    got += _take(it, 3)
  finally:
    it.close()
  assert _same(got, ref)
  it = data.train_iterator(source, PP, global_batch_size=8, seed=0,
                           worker_count=2)
  try:
    it.set_state(state)
    assert _same(_take(it, 3), ref[5:])
  finally:
    it.close()


def test_bad_records_are_skipped_and_reported(caplog):
  src = NanSource(20, bad=(3,), unreadable=(11,))
  before = pipeline.bad_record_count()
  with caplog.at_level(logging.WARNING):
    it = data.train_iterator(src, PP, global_batch_size=6, seed=0)
    idx = np.concatenate([b["index"] for b in _take(it, 6)])  # ~2 epochs.
  assert 3 not in idx and 11 not in idx
  assert set(idx) == set(range(20)) - {3, 11}
  assert pipeline.bad_record_count() - before >= 4  # Both, in both epochs.
  text = caplog.text
  assert "syn-1-000003" in text and "NaN" in text and "syn-1-000011" in text
  assert text.count("syn-1-000003") == 1  # Logged once per record, not per epoch.


def test_eval_batches_in_order_padded(source):
  batches = list(data.eval_batches(source, PP, batch_size=16, n_crops=3))
  for b in batches:
    data.check_batch(b, "eval")
  assert len(batches) == 3
  b = batches[-1]
  assert b["signal"].shape == (16, 3, 12, 500) and b["signal"].dtype == np.float32
  assert b["valid"].sum() == 8 and not b["valid"][8:].any()
  assert b["labels"].shape == (16, 5) and b["lead_mask"].shape == (16, 12)
  ids = np.concatenate([x["record_id"][x["valid"]] for x in batches])
  np.testing.assert_array_equal(ids, source.metadata()["record_id"])
  np.testing.assert_array_equal(
      np.concatenate([x["fold"][x["valid"]] for x in batches]),
      source.metadata()["fold"])
  assert list(b["record_id"][8:]) == [""] * 8
  np.testing.assert_array_equal(batches[0]["signal"][2], PP.crops(source[2], 3))
  single = next(data.eval_batches(source, PP, batch_size=4, indices=[5, 1],
                                  num_threads=2))
  assert single["signal"].shape == (4, 1, 12, 500)
  assert list(single["index"]) == [5, 1, -1, -1]
  np.testing.assert_array_equal(single["signal"][0, 0], PP(source[5]))


def test_eval_batches_skip_bad_records():
  src = NanSource(10, bad=(0, 7))
  batches = list(data.eval_batches(src, PP, batch_size=4))
  ids = [i for b in batches for i, v in zip(b["index"], b["valid"]) if v]
  assert ids == [1, 2, 3, 4, 5, 6, 8, 9]


def test_orbax_checkpoint_round_trip(source, tmp_path):
  import grain
  import orbax.checkpoint as ocp
  it = data.train_iterator(source, PP, global_batch_size=8, seed=0)
  _take(it, 3)
  manager = ocp.CheckpointManager(tmp_path / "ckpt")
  manager.save(3, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointSave(it)))
  manager.wait_until_finished()
  expected = _take(it, 2)
  fresh = data.train_iterator(source, PP, global_batch_size=8, seed=0)
  restored = manager.restore(3, args=ocp.args.Composite(
      data=grain.checkpoint.CheckpointRestore(fresh)))
  assert _same(_take(restored.data, 2), expected)
  manager.close()


def test_mostly_bad_data_fails_loudly():
  src = NanSource(300, bad=range(300))
  it = data.train_iterator(src, PP, global_batch_size=4, seed=0,
                           read_threads=0)
  with pytest.raises(pipeline.TooManyBadRecordsError, match="were bad"):
    next(it)


def _close(it):
  if hasattr(it, "close"):
    it.close()


class AddNoise:
  """Picklable augmentation: white noise of 0.1 mV."""

  def __call__(self, x, rng):
    return x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_records_below_the_limit_are_counted(workers):
  src = NanSource(60, bad=(3,), unreadable=(40,))  # 3.3% of the records.
  kw = dict(global_batch_size=8, seed=0, max_bad_fraction=0.1,
            augment=AddNoise())
  it = data.train_iterator(src, PP, worker_count=workers, **kw)
  try:
    batches = _take(it, 15)  # 120 good records: past the 100 checked.
    state = it.get_state()
    seen, bad = it.records_seen, it.bad_records
  finally:
    _close(it)
  assert set(batches[0]) == {"signal", "lead_mask", "labels", "index", "patient"}
  idx = np.concatenate([b["index"] for b in batches])
  assert 3 not in idx and 40 not in idx
  assert seen == 120 + bad and bad >= 2 and bad / seen < 0.1
  assert state["records_seen"] == seen and state["bad_records"] == bad
  ref_it = data.train_iterator(src, PP, **kw)
  # Skips, counts and augmentation are the same with and without workers.
  assert _same(batches, _take(ref_it, 15))
  assert (ref_it.records_seen, ref_it.bad_records) == (seen, bad)
  if workers == 0:
    expected = next(ref_it)
    resumed = data.train_iterator(src, PP, **kw)
    resumed.set_state(state)  # The counts resume too.
    assert _same([next(resumed)], [expected])
    assert (resumed.records_seen, resumed.bad_records) == (
        ref_it.records_seen, ref_it.bad_records)


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_records_above_the_limit_stop_the_run(workers):
  src = NanSource(40, bad=range(0, 40, 5), unreadable=(7,))  # 22.5% bad.
  it = data.train_iterator(src, PP, global_batch_size=8, seed=0,
                           worker_count=workers, max_bad_fraction=0.1)
  try:
    with pytest.raises(pipeline.TooManyBadRecordsError) as err:
      _take(it, 30)
    assert it.records_seen == 100  # Checked from max(100, 10 / 0.1) records on.
  finally:
    _close(it)
  text = str(err.value)
  assert isinstance(err.value, RuntimeError)
  assert "of the 100 records" in text and "max_bad_fraction=0.1" in text
  assert "syn-1-000" in text and ("NaN" in text or "truncated file" in text)


def test_zero_tolerance_and_bad_arguments(source):
  it = data.train_iterator(NanSource(20, bad=(3,)), PP, global_batch_size=4,
                           seed=0, max_bad_fraction=0.0)
  with pytest.raises(pipeline.TooManyBadRecordsError, match="syn-1-000003"):
    _take(it, 6)
  with pytest.raises(ValueError, match="max_bad_fraction"):
    data.train_iterator(source, PP, global_batch_size=4, seed=0,
                        max_bad_fraction=1.0)


def test_augment_runs_after_standardisation(source):
  kw = dict(global_batch_size=8, seed=0)
  plain = next(data.train_iterator(source, PP, **kw))
  noisy = next(data.train_iterator(source, PP, augment=AddNoise(), **kw))
  again = next(data.train_iterator(source, PP, augment=AddNoise(), **kw))
  np.testing.assert_array_equal(noisy["index"], plain["index"])
  assert not np.allclose(noisy["signal"], plain["signal"], atol=0.05)
  assert _same([noisy], [again])  # Seeded by the stream position.
  # Augmented after the z-score (as the references do), so a gain is not undone.
  doubled = next(data.train_iterator(source, PP, augment=lambda x, rng: 2 * x, **kw))
  np.testing.assert_allclose(doubled["signal"], 2 * plain["signal"], rtol=1e-6, atol=1e-6)
  # Absent leads (mask 0) get no noise: they stay constant after z-scoring.
  limb = data.open_source("synthetic:8?seed=1&seconds=4&leads=I,II,III")
  b = next(data.train_iterator(limb, PP, augment=AddNoise(), **kw))
  assert (b["lead_mask"][:, 3:] == 0).all()
  np.testing.assert_allclose(b["signal"][:, 3:].std(axis=-1), 0.0, atol=1e-6)
  with pytest.raises(ValueError, match="shape"):
    next(data.train_iterator(source, PP, augment=lambda x, rng: x[:, :10],
                             read_threads=0, **kw))


def test_check_batch_names_what_breaks_the_schema():
  good = data.example_batch({"B": 2, "L": 12, "T": 50, "K": 3})
  data.check_batch(good)
  with pytest.raises(ValueError, match="train batch lacks 'patient'"):
    data.check_batch({k: v for k, v in good.items() if k != "patient"})
  with pytest.raises(ValueError, match=r"batch\['labels'\] axis B is 3 but batch\['signal'\]"):
    data.check_batch({**good, "labels": np.zeros((3, 3), np.float32)})
  with pytest.raises(ValueError, match=r"batch\['index'\] has dtype float32"):
    data.check_batch({**good, "index": np.zeros(2, np.float32)})
  pad = data.example_batch({"B": 2, "V": 1, "L": 12, "T": 50, "K": 3}, "eval", padding=True)
  assert not pad["valid"].any() and (pad["index"] == -1).all() and not pad["view_mask"].any()
