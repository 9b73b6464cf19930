"""Fine-tuning data: augmentation schedule, paired batches, grouped splits, cached records."""

import numpy as np
import pytest

from ecgjax import data
from ecgjax.data import augment
from ecgjax.finetune import data as ft_data
from ecgjax.finetune import splits

PP = data.Preprocessing(fs=100.0, samples=800, bandpass=(0.67, 40.0), filter_order=4,
                        standardize="per_lead")


@pytest.fixture(scope="module")
def source():
  return ft_data.PreparedInMemory(data.open_source("synthetic:24?seed=2&fs=100&seconds=10"), PP)


def test_augmentation_schedule_values():
  assert augment.alpha(0, 10) == pytest.approx(1.0)
  assert augment.alpha(5, 10) == pytest.approx(0.5)
  assert augment.alpha(10, 10) == pytest.approx(0.0)
  assert augment.alpha(2.5, 10) == pytest.approx(0.5 + 0.5 * np.cos(np.pi / 4))
  assert augment.alpha(12, 10) == 0.0  # past the end it stays off
  x = np.random.default_rng(0).normal(size=(12, 500)).astype(np.float32)
  off = augment.ScheduledAugment().at_epoch(10, 10)
  np.testing.assert_array_equal(off(x, np.random.default_rng(1)), x)  # alpha 0: identity


def test_prepared_in_memory_equals_preparing_each_record(source):
  raw = data.open_source("synthetic:24?seed=2&fs=100&seconds=10")
  for i in (0, 7):
    x, mask = PP.prepare(raw[i])
    got, got_mask = data.prepare_record(PP, source[i])
    np.testing.assert_array_equal(got, x)
    np.testing.assert_array_equal(got_mask, mask)
  sel = ft_data.PreparedInMemory(raw, PP, labels=("AF", "NORM"))
  assert sel.label_names == ("AF", "NORM")
  np.testing.assert_array_equal(sel.metadata()["labels"], raw.metadata()["labels"][:, [3, 0]])
  np.testing.assert_array_equal(sel[3]["labels"], raw[3]["labels"][[3, 0]])
  with pytest.raises(ValueError, match="not in"):
    ft_data.PreparedInMemory(raw, PP, labels=("XYZ",))


def test_paired_batches_hold_each_original_and_its_augmented_copy(source):
  kw = dict(global_batch_size=6, seed=3)
  plain = next(data.train_iterator(source, PP, **kw))
  paired = next(data.train_iterator(source, PP, augment=augment.ScheduledAugment(),
                                    augment_epochs=4, paired=True, **kw))
  assert paired["signal"].shape == (12, 12, 800)  # batch_size counts originals
  # Rows 2i are the un-augmented crops the plain stream gives; rows 2i + 1 their copies.
  np.testing.assert_array_equal(paired["signal"][0::2], plain["signal"])
  assert not np.allclose(paired["signal"][1::2], plain["signal"])
  for k in ("labels", "index", "patient", "lead_mask"):
    np.testing.assert_array_equal(paired[k][0::2], plain[k])
    np.testing.assert_array_equal(paired[k][1::2], plain[k])


def test_augmentation_strength_follows_the_stream_epoch(source):
  n = len(source)
  # augment_epochs=1: epoch 0 at alpha 1, every later epoch at alpha(e >= 1) = 0: exact copies.
  it = data.train_iterator(source, PP, global_batch_size=n, seed=1,
                           augment=augment.ScheduledAugment(), augment_epochs=1, paired=True)
  first, second = next(it), next(it)
  assert not np.allclose(first["signal"][0::2], first["signal"][1::2])
  np.testing.assert_array_equal(second["signal"][0::2], second["signal"][1::2])
  with pytest.raises(TypeError, match="at_epoch"):
    data.train_iterator(source, PP, global_batch_size=4, seed=0,
                        augment=lambda x, rng: x, augment_epochs=3)
  with pytest.raises(ValueError, match="paired"):
    data.train_iterator(source, PP, global_batch_size=4, seed=0, paired=True)


def _meta(n_patients=60, seed=0):
  rng = np.random.default_rng(seed)
  per = rng.integers(1, 4, n_patients)
  patient = np.repeat([f"p{i}" for i in range(n_patients)], per)
  labels = (rng.random((len(patient), 3)) < [0.5, 0.2, 0.1]).astype(np.float32)
  fold = np.repeat(rng.integers(1, 9, n_patients), per)
  return {"patient_id": patient, "labels": labels, "fold": fold,
          "record_id": np.array([f"r{i}" for i in range(len(patient))])}


def test_grouped_cv_never_shares_a_patient_and_tests_every_record_once():
  meta = _meta()
  n = len(meta["patient_id"])
  out = splits.make_splits(meta, np.arange(n), split="groupcv", n_folds=5, val_fraction=0.2)
  assert len(out) == 5
  tested = np.concatenate([s.test for s in out])
  assert sorted(tested.tolist()) == list(range(n))
  pid = meta["patient_id"]
  for s in out:
    sides = [set(pid[s.train]), set(pid[s.val]), set(pid[s.test])]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    # The validation part comes out of the training folds, never from the test fold.
    assert len(set(s.train) | set(s.val) | set(s.test)) == n
    assert 0.1 < len(s.val) / (len(s.train) + len(s.val)) < 0.3
  # Stratified: every fold's test side holds positives of the common labels.
  assert all(meta["labels"][s.test, 0].sum() > 0 for s in out)


def test_data_folds_split_and_leak_check():
  meta = _meta()
  patients = np.unique(meta["patient_id"], return_inverse=True)[1]
  meta["fold"] = patients % 8 + 1  # folds by patient, as PTB-XL's strat_fold
  n = len(meta["fold"])
  s, = splits.make_splits(meta, np.arange(n), split="folds", test_folds=[8], val_folds=[7])
  assert set(meta["fold"][s.test]) == {8} and set(meta["fold"][s.val]) == {7}
  assert set(meta["fold"][s.train]) == set(range(1, 7))
  s, = splits.make_splits(meta, np.arange(n), split="folds", test_folds=[8])
  assert set(meta["fold"][s.val]) <= set(range(1, 8)) and len(s.val)
  bad = splits.Split(0, np.array([0, 1]), np.array([2]), np.array([1]))
  with pytest.raises(ValueError, match="both"):
    splits.check_disjoint(meta["patient_id"], bad)


def test_pos_weight_modes():
  y = np.array([[1, 0], [0, 0], [0, 1], [0, 1]], np.float32)
  np.testing.assert_allclose(ft_data.pos_weight(y, "balanced"), [3.0, 1.0])
  assert ft_data.pos_weight(y, "none") is None
  np.testing.assert_allclose(ft_data.pos_weight(y, "2"), [2.0, 2.0])
  np.testing.assert_allclose(ft_data.pos_weight(y, "2,5"), [2.0, 5.0])
  with pytest.raises(ValueError):
    ft_data.pos_weight(y, "1,2,3")
