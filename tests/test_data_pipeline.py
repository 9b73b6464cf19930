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
  assert set(b) == {"signal", "lead_mask", "labels", "index"}
  assert b["signal"].shape == (8, 12, 500) and b["signal"].dtype == np.float32
  assert b["lead_mask"].shape == (8, 12) and b["lead_mask"].dtype == np.float32
  assert b["labels"].shape == (8, 5) and b["labels"].dtype == np.float32
  assert b["index"].dtype == np.int64
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
  with pytest.raises(RuntimeError, match="were bad"):
    next(it)
