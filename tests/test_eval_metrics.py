"""Metrics of the evaluation suite against scikit-learn, bootstrap CIs, operating points."""

import math

import numpy as np
import pytest
from sklearn import calibration as skcal
from sklearn import metrics as skm

from ecgjax.eval import bootstrap, calibration, report
from ecgjax.eval import predictions as pred_lib


def _scores(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(seed)
  y = (rng.random(n) < 0.3).astype(np.int64)
  # Rounded: plenty of ties, which is where hand-written AUROC/AP usually go wrong.
  p = np.clip(0.25 * y + rng.random(n) * 0.75, 0, 1).round(2)
  return y, p


def test_weighted_auroc_and_ap_equal_sklearn_with_and_without_weights():
  y, p = _scores()
  a, ap = bootstrap.weighted_auroc_auprc(y, p, np.ones((1, y.size)))
  assert a[0] == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
  assert ap[0] == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
  w = np.random.default_rng(1).integers(0, 4, size=(5, y.size)).astype(float)
  a, ap = bootstrap.weighted_auroc_auprc(y, p, w)
  for i in range(5):
    # Integer weights are the same as repeating records: what a bootstrap resample does.
    yy, pp = np.repeat(y, w[i].astype(int)), np.repeat(p, w[i].astype(int))
    assert a[i] == pytest.approx(skm.roc_auc_score(yy, pp), abs=1e-12)
    assert ap[i] == pytest.approx(skm.average_precision_score(yy, pp), abs=1e-12)
  a, ap = bootstrap.weighted_auroc_auprc(y, p, (y[None] == 1).astype(float))
  assert math.isnan(a[0]) and math.isnan(ap[0])  # only positives drawn


def test_bootstrap_ci_covers_the_estimate_and_is_deterministic():
  y, p = _scores(200, 3)
  rec = np.arange(y.size)
  w = bootstrap.record_weights(y.size, 1000, seed=7)
  b = bootstrap.bootstrap_label(y, p, rec, [rec], w)
  assert b.auroc == pytest.approx(skm.roc_auc_score(y, p))
  assert b.auroc_ci[0] < b.auroc < b.auroc_ci[1]
  assert b.auprc_ci[0] < b.auprc < b.auprc_ci[1]
  assert b.auroc_ci[1] - b.auroc_ci[0] < 0.25
  again = bootstrap.bootstrap_label(y, p, rec, [rec], bootstrap.record_weights(y.size, 1000, 7))
  assert again.auroc_ci == b.auroc_ci and again.auprc_ci == b.auprc_ci
  other = bootstrap.bootstrap_label(y, p, rec, [rec], bootstrap.record_weights(y.size, 1000, 8))
  assert other.auroc_ci != b.auroc_ci
  # The percentile interval is the 2.5/97.5% quantiles of the resampled AUROCs.
  s = b.auroc_samples[np.isfinite(b.auroc_samples)]
  assert b.auroc_ci == pytest.approx(tuple(np.quantile(s, [0.025, 0.975])))


def test_bootstrap_skips_and_counts_single_class_resamples():
  y = np.zeros(20, np.int64)
  y[0] = 1  # one positive: about 1/e of resamples miss it
  p = np.linspace(0, 1, 20)
  rec = np.arange(20)
  b = bootstrap.bootstrap_label(y, p, rec, [rec], bootstrap.record_weights(20, 500, 0))
  assert 100 < b.n_skipped < 260
  assert np.isnan(b.auroc_samples).sum() == b.n_skipped


def test_bootstrap_over_repeats_averages_them():
  y, p = _scores(100, 4)
  _, p2 = _scores(100, 5)
  rows = np.arange(200)
  yy, pp, rec = np.r_[y, y], np.r_[p, p2], np.r_[np.arange(100), np.arange(100)]
  b = bootstrap.bootstrap_label(yy, pp, rec, [rows[:100], rows[100:]],
                                bootstrap.record_weights(100, 200, 0))
  assert b.auroc == pytest.approx((skm.roc_auc_score(y, p) + skm.roc_auc_score(y, p2)) / 2)


def test_thresholds_youden_fixed_and_target_sensitivity():
  y, p = _scores()
  fpr, tpr, thr = skm.roc_curve(y, p)
  t = calibration.choose_threshold(y, p, calibration.parse_threshold("youden"))
  assert t == pytest.approx(thr[np.argmax(tpr - fpr)])
  assert calibration.choose_threshold(y, p, calibration.parse_threshold("0.4")) == 0.4
  t9 = calibration.choose_threshold(y, p, calibration.parse_threshold("sens=0.9"))
  op = calibration.operating_point(y, p, t9)
  assert op["sensitivity"] >= 0.9
  # The highest such threshold: one step up loses the target.
  higher = np.unique(p)[np.unique(p) > t9]
  assert calibration.operating_point(y, p, higher[0])["sensitivity"] < 0.9
  for bad in ("1.5", "sens=0", "foo", "sens=x"):
    with pytest.raises(ValueError, match="bad threshold"):
      calibration.parse_threshold(bad)


def test_operating_point_matches_sklearn():
  y, p = _scores()
  op = calibration.operating_point(y, p, 0.5)
  pred = (p >= 0.5).astype(int)
  tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
  assert (op["tp"], op["fp"], op["tn"], op["fn"]) == (tp, fp, tn, fn)
  assert op["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
  assert op["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
  assert op["precision"] == pytest.approx(skm.precision_score(y, pred))
  assert op["f1"] == pytest.approx(skm.f1_score(y, pred))


def test_brier_and_calibration_curve_match_sklearn():
  y, p = _scores()
  assert calibration.brier(y, p) == pytest.approx(skm.brier_score_loss(y, p))
  for strategy in ("uniform", "quantile"):
    c = calibration.calibration_curve(y, p, n_bins=5, strategy=strategy)
    obs, pred = skcal.calibration_curve(y, p, n_bins=5, strategy=strategy)
    np.testing.assert_allclose(c["observed"], obs, atol=1e-12)
    np.testing.assert_allclose(c["mean_predicted"], pred, atol=1e-12)
    assert sum(c["count"]) == y.size == sum(c["histogram"]["counts"])


def test_decision_curve_net_benefit_by_hand():
  y = np.array([1, 1, 0, 0, 0])
  p = np.array([0.9, 0.3, 0.6, 0.1, 0.2])
  d = calibration.decision_curve(y, p, np.array([0.25, 0.5]))
  # t=0.25: positives called {0.9, 0.3, 0.6}: TP 2, FP 1 -> 2/5 - 1/5 * (1/3).
  assert d["model"][0] == pytest.approx(0.4 - 0.2 / 3)
  # t=0.5: {0.9, 0.6}: TP 1, FP 1 -> 1/5 - 1/5 * 1.
  assert d["model"][1] == pytest.approx(0.0)
  assert d["treat_all"] == pytest.approx([0.4 - 0.6 / 3, 0.4 - 0.6])
  assert d["treat_none"] == [0.0, 0.0]


def _table(n_rep: int = 1) -> pred_lib.Predictions:
  y, p = _scores(120, 9)
  y2, p2 = _scores(120, 10)
  ys, ps = np.c_[y, y2], np.c_[p, p2]
  ids = np.array([f"r{i}" for i in range(120)])
  return pred_lib.Predictions(
      np.tile(ids, n_rep), np.tile(ids, n_rep), np.zeros(120 * n_rep, np.int64),
      np.repeat(np.arange(n_rep), 120), np.tile(np.arange(120) % 3, n_rep),
      np.tile(ys, (n_rep, 1)).astype(np.float32),
      np.concatenate([ps + 0.001 * r for r in range(n_rep)]).clip(0, 1), ("A", "B"))


def test_report_numbers_match_sklearn_and_repeats_give_mean_std():
  pred = _table()
  r = report.build(pred, n_bootstrap=200, seed=0)
  for j, name in enumerate(("A", "B")):
    m = r["per_label"][name]
    assert m["auroc"] == pytest.approx(skm.roc_auc_score(pred.y[:, j], pred.p[:, j]))
    assert m["auprc"] == pytest.approx(skm.average_precision_score(pred.y[:, j], pred.p[:, j]))
    assert m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1]
    assert m["brier"] == pytest.approx(skm.brier_score_loss(pred.y[:, j], pred.p[:, j]))
    assert m["n_pos"] == int(pred.y[:, j].sum())
  assert r["macro_auroc"] == pytest.approx(np.mean([r["per_label"][n]["auroc"] for n in "AB"]))
  assert r["macro_auroc_ci"][0] <= r["macro_auroc"] <= r["macro_auroc_ci"][1]
  assert len(r["per_fold"]) == 3 and r["n_repeats"] == 1
  rep = report.build(_table(3), n_bootstrap=200, seed=0)
  assert rep["n_repeats"] == 3 and len(rep["macro_auroc_repeats"]) == 3
  assert rep["macro_auroc_mean"] == pytest.approx(np.mean(rep["macro_auroc_repeats"]))
  assert rep["macro_auroc_std"] == pytest.approx(np.std(rep["macro_auroc_repeats"], ddof=1))
  assert rep["n_records"] == 120 and rep["n_rows"] == 360


def test_report_json_safe_turns_nan_into_null():
  out = report.json_safe({"a": math.nan, "b": [np.float32(1.5), np.inf], "c": np.arange(2)})
  assert out == {"a": None, "b": [1.5, None], "c": [0, 1]}
