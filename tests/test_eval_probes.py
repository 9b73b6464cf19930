"""The probes (logistic regression, XGBoost, MLP): separable data, shuffled labels, errors."""

import math

import numpy as np
import pytest

from ecgjax.eval import experiment, metrics, probes, protocols, report


def _separable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Label j is the sign of feature j, with a margin; 13 noise features."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, 16))
  y = (x[:, :3] > 0).astype(np.float32)
  x[:, :3] += np.where(y > 0, 1.0, -1.0)
  return x * 5.0 + 3.0, y


@pytest.mark.parametrize("name", ["logreg", "xgboost", "mlp"])
def test_probe_on_separable_features_is_near_perfect(name):
  if name == "xgboost":
    pytest.importorskip("xgboost", reason="optional: pip install xgboost-cpu")
  x_train, y_train = _separable(240, 0)
  x_test, y_test = _separable(120, 1)
  probs = probes.get_probe(name)(x_train, y_train, x_test, seed=0)
  assert probs.shape == (120, 3) and np.all((probs >= 0) & (probs <= 1))
  for j in range(3):
    assert metrics.auroc(y_test[:, j], probs[:, j]) > 0.97


def test_probes_are_reproducible_from_the_seed():
  pytest.importorskip("xgboost", reason="optional: pip install xgboost-cpu")
  x_train, y_train = _separable(200, 2)
  x_test, _ = _separable(50, 3)
  for name in ("xgboost", "mlp"):
    fn = probes.get_probe(name)
    a = fn(x_train, y_train, x_test, seed=4)
    np.testing.assert_array_equal(a, fn(x_train, y_train, x_test, seed=4))


@pytest.mark.parametrize("name", ["logreg", "xgboost"])
def test_probe_on_shuffled_labels_scores_chance(name):
  if name == "xgboost":
    pytest.importorskip("xgboost", reason="optional: pip install xgboost-cpu")
  x, y = _separable(400, 5)
  y = y[np.random.default_rng(0).permutation(len(y))]  # labels no longer follow x
  patient = np.array([f"p{i // 2}" for i in range(400)])
  table = experiment.Table(np.array([f"r{i}" for i in range(400)]), patient,
                           np.zeros(400, np.int64), y, ("a", "b", "c"))
  splits = protocols.make_splits("groupcv", y, patient, n_folds=5)
  pred = experiment.run_probe(table, [x], splits, probe=name, log=False)
  r = report.build(pred, n_bootstrap=1000)  # patient resamples: 100 are too few for the tail
  assert abs(r["macro_auroc"] - 0.5) < 0.07
  assert r["macro_auroc_ci"][0] < 0.5 < r["macro_auroc_ci"][1] + 0.03


def test_single_class_training_label_raises_or_gives_nan():
  x, y = _separable(60, 0)
  y[:, 1] = 0
  with pytest.raises(probes.ProbeError, match="label 'b' has no positive examples in fold 2"):
    probes.fit_predict_mlp(x, y, x, label_names=["a", "b", "c"], split="fold 2")
  with pytest.warns(probes.SingleClassTrainingWarning, match="'b' holds a single class"):
    p = probes.fit_predict_logreg(x, y, x[:7], label_names=["a", "b", "c"],
                                  on_single_class="nan")
  assert np.isnan(p[:, 1]).all() and np.isfinite(p[:, [0, 2]]).all()


def test_cv_with_a_rare_label_reports_nan_for_that_fold_and_does_not_crash():
  x, y = _separable(100, 1)
  y[:, 2] = 0
  y[0, 2] = 1  # one positive: the training side of its fold holds none
  patient = np.array([f"p{i}" for i in range(100)])
  table = experiment.Table(patient, patient, np.zeros(100, np.int64), y, ("a", "b", "c"))
  splits = protocols.make_splits("groupcv", y, patient, n_folds=5)
  with pytest.warns(probes.SingleClassTrainingWarning):
    pred = experiment.run_probe(table, [x], splits, log=False)
  r = report.build(pred, n_bootstrap=50)
  folds_c = [f["per_label"]["c"] for f in r["per_fold"]]
  assert all(math.isnan(v) for v in folds_c)  # no fold scores c
  assert math.isfinite(r["per_label"]["a"]["auroc"]) and r["excluded"] == ["c"]
  assert r["per_label"]["c"]["n_missing"] > 0 and math.isfinite(r["macro_auroc"])
