"""Protocols (splits without patient leaks, label-efficiency subsamples) and early fusion."""

import numpy as np
import pytest

from ecgjax.eval import experiment, fusion, protocols


def _records(n: int = 300, seed: int = 0):
  """Multi-label records, patients owning 1-3 records each."""
  rng = np.random.default_rng(seed)
  y = np.stack([rng.random(n) < q for q in (0.5, 0.2, 0.08)], 1).astype(np.float32)
  patient = np.repeat(np.arange(n), rng.integers(1, 4, n))[:n].astype(str)
  return y, patient


def test_group_kfold_never_puts_a_patient_on_both_sides_and_covers_every_record():
  y, patient = _records()
  for seed in (0, 1, 2):
    folds = protocols.group_kfold(y, patient, 5, seed)
    assert len(folds) == 5
    seen = np.concatenate([test for _, test in folds])
    assert np.array_equal(np.sort(seen), np.arange(len(y)))  # each record scored once
    for train, test in folds:
      assert not set(patient[train]) & set(patient[test])
      assert np.intersect1d(train, test).size == 0
      # Stratified: every label's prevalence close to the whole set's.
      assert np.all(np.abs(y[test].mean(0) - y.mean(0)) < 0.08)
  a = protocols.group_kfold(y, patient, 5, 0)
  b = protocols.group_kfold(y, patient, 5, 0)
  c = protocols.group_kfold(y, patient, 5, 1)
  assert all(np.array_equal(x[1], z[1]) for x, z in zip(a, b))  # seeded
  assert not all(np.array_equal(x[1], z[1]) for x, z in zip(a, c))


def test_make_splits_for_every_protocol():
  y, patient = _records()
  cv = protocols.make_splits("groupcv", y, patient, seeds=(0, 1), n_folds=4)
  assert len(cv) == 8 and {s.repeat for s in cv} == {0, 1}
  assert len({s.seed for s in cv}) == 8
  rs = protocols.make_splits("reshuffle", y, patient, repeats=10, seeds=(0,))
  assert len(rs) == 10 and len({tuple(s.test) for s in rs}) == 10
  for s in rs:
    assert 0.15 < s.test.size / len(y) < 0.25
    assert not set(patient[s.train]) & set(patient[s.test])
  mask = np.arange(len(y)) % 5 == 0
  (sp,) = protocols.make_splits("split", y, patient, test_mask=mask)
  assert np.array_equal(sp.test, np.flatnonzero(mask))
  with pytest.raises(protocols.ProtocolError, match="needs a test set"):
    protocols.make_splits("split", y, patient)
  with pytest.raises(protocols.ProtocolError, match="at least 5 patients"):
    protocols.group_kfold(y[:6], np.array(["a", "a", "b", "b", "c", "c"]), 5, 0)


def test_subsample_train_keeps_minimum_positives_and_the_size():
  y, _ = _records(400, 1)
  train = np.arange(0, 400, 2)
  for seed in (0, 1):
    for size in (25, 60):
      sub = protocols.subsample_train(train, y, size, seed, min_positives=3)
      assert sub.size == size and np.isin(sub, train).all() and np.unique(sub).size == size
      assert np.all(y[sub].sum(0) >= 3) and np.all((1 - y[sub]).sum(0) >= 3)
  assert np.array_equal(protocols.subsample_train(train, y, None, 0), train)
  a = protocols.subsample_train(train, y, 25, 0)
  assert np.array_equal(a, protocols.subsample_train(train, y, 25, 0))
  assert not np.array_equal(a, protocols.subsample_train(train, y, 25, 1))
  with pytest.raises(protocols.ProtocolError, match="cannot keep 3 positives"):
    protocols.subsample_train(train, y, 5, 0)
  assert protocols.parse_train_sizes("100, 25,all,50") == [25, 50, 100, None]
  with pytest.raises(ValueError, match="bad train size"):
    protocols.parse_train_sizes("25,half")


def test_minmax_is_fitted_on_training_rows_only():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(50, 4))
  train, test = np.arange(40), np.arange(40, 50)
  x[test] *= 100.0  # test rows far outside the training range
  a_train, a_test = fusion.fuse([x], train, test)
  assert np.allclose(a_train.min(0), 0) and np.allclose(a_train.max(0), 1)
  lo, hi = x[train].min(0), x[train].max(0)
  np.testing.assert_allclose(a_test, (x[test] - lo) / (hi - lo))
  assert np.abs(a_test).max() > 1  # not refitted on (or clipped to) the test rows
  const = np.c_[x[:, :1], np.full(50, 3.0)]
  c_train, _ = fusion.fuse([const], train, test)
  assert np.all(c_train[:, 1] == 0)  # a constant feature: shifted, not divided by 0


def test_fusion_of_two_blocks_is_the_concatenation_of_separately_normalised_blocks():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(30, 3)) * 10, rng.normal(size=(30, 5)) + 4
  train, test = np.arange(0, 30, 3), np.setdiff1d(np.arange(30), np.arange(0, 30, 3))
  f_train, f_test = fusion.fuse([a, b], train, test)
  a_train, a_test = fusion.fuse([a], train, test)
  b_train, b_test = fusion.fuse([b], train, test)
  np.testing.assert_array_equal(f_train, np.c_[a_train, b_train])
  np.testing.assert_array_equal(f_test, np.c_[a_test, b_test])


def test_align_matches_by_record_id_and_names_mismatches():
  ids = np.array(["r1", "r2", "r3"])
  block = fusion.Block("b.npz", np.array(["r3", "r1", "r2", "r9"]), np.arange(4)[:, None])
  rows = fusion.align(ids, block, "a.npz")
  np.testing.assert_array_equal(block.embeddings[rows, 0], [1, 2, 0])
  with pytest.raises(fusion.FusionError, match="has 1 record.*'r9'"):
    fusion.align(ids, block, "a.npz", exact=True)
  short = fusion.Block("b.npz", np.array(["r1"]), np.zeros((1, 1)))
  with pytest.raises(fusion.FusionError, match=r"b.npz lacks 2 of the 3 records of a.npz "
                                               r"\(e.g. 'r2', 'r3'\)"):
    fusion.align(ids, short, "a.npz")
  dup = fusion.Block("b.npz", np.array(["r1", "r1", "r2", "r3"]), np.zeros((4, 1)))
  with pytest.raises(fusion.FusionError, match="occur more than once"):
    fusion.align(ids, dup, "a.npz")


def test_run_probe_scores_each_record_once_per_repeat_out_of_fold():
  y, patient = _records(120, 2)
  x = np.c_[y * 2 + np.random.default_rng(0).normal(size=y.shape), np.ones((120, 2))]
  ids = np.array([f"r{i}" for i in range(120)])
  table = experiment.Table(ids, patient, np.zeros(120, np.int64), y, ("a", "b", "c"))
  splits = protocols.make_splits("groupcv", y, patient, seeds=(0, 1), n_folds=3)
  pred = experiment.run_probe(table, [x], splits, probe="logreg", log=False)
  assert len(pred.record_id) == 240
  for rows in pred.repeats:
    assert sorted(pred.record_id[rows]) == sorted(ids)
  assert np.isfinite(pred.p).all()
