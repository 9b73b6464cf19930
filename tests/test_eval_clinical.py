"""The clinical report: risk strata, Spearman, regression scores, patient bootstrap, grouped C
search and where the operating threshold was chosen."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from ecgjax.eval import bootstrap, calibration, clinical, probes, report
from ecgjax.eval import predictions as pred_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _table(n=300, seed=0, patients_of=1, task="classification"):
  rng = np.random.default_rng(seed)
  y = (rng.random((n, 2)) < 0.3).astype(np.float32)
  p = np.clip(0.3 * y + 0.7 * rng.random((n, 2)), 0, 1)
  if task == "regression":
    y = rng.normal(50, 10, (n, 1))
    p = y + rng.normal(0, 5, (n, 1))
  names = ("LAD", "LM") if task == "classification" else ("age",)
  return pred_lib.Predictions(
      np.array([f"r{i}" for i in range(n)]), np.array([f"p{i // patients_of}" for i in range(n)]),
      np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.int64), y, p, names, task)


def test_wilson_interval_matches_the_published_values():
  # Wilson score intervals for 0/10 and 3/10 (Newcombe 1998, method 3).
  lo, hi = clinical.wilson_ci(0, 10)
  assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
  assert clinical.wilson_ci(3, 10) == pytest.approx((0.1078, 0.6032), abs=1e-4)
  assert np.isnan(clinical.wilson_ci(0, 0)).all()


def test_weighted_statistics_equal_scipy_on_the_duplicated_records():
  rng = np.random.default_rng(1)
  x = rng.integers(0, 4, 60).astype(float)  # an ordinal grade, with ties
  y = x + rng.normal(0, 1, 60)
  y[:6] = y[6]  # ties in y too
  w = bootstrap.record_weights(60, 5, seed=3)
  rho = clinical.weighted_spearman(x, y, w)
  for b in range(5):
    k = w[b].astype(int)
    assert rho[b] == pytest.approx(stats.spearmanr(np.repeat(x, k), np.repeat(y, k))[0],
                                   abs=1e-12)
  s = clinical.regression_scores(y, x, np.arange(60), w)
  assert s["mae"] == pytest.approx(np.mean(np.abs(x - y)))
  assert s["rmse"] == pytest.approx(np.sqrt(np.mean((x - y) ** 2)))
  assert s["r2"] == pytest.approx(1 - np.sum((x - y) ** 2) / np.sum((y - y.mean()) ** 2))
  assert s["pearson"] == pytest.approx(stats.pearsonr(x, y)[0])
  assert s["spearman"] == pytest.approx(stats.spearmanr(x, y)[0])


def test_patient_bootstrap_moves_a_patients_records_together_and_widens_the_interval():
  cluster = np.repeat(np.arange(40), 5)
  w = bootstrap.cluster_weights(cluster, 200, seed=0)
  assert w.shape == (200, 200) and np.all(w.sum(1) == 200)
  assert np.all(w.reshape(200, 40, 5) == w.reshape(200, 40, 5)[..., :1])
  # Five identical records per patient: resampling records pretends to 5x the information.
  pred = _table(200, patients_of=5)
  pred.y[:] = np.repeat(pred.y[::5], 5, 0)
  pred.p[:] = np.repeat(pred.p[::5], 5, 0)
  by_patient = report.build(pred, n_bootstrap=500)
  by_record = report.build(pred, n_bootstrap=500, bootstrap_unit="record")
  assert by_patient["bootstrap"]["unit"] == "patient" and by_record["bootstrap"]["unit"] == "record"
  assert by_patient["macro_auroc"] == by_record["macro_auroc"]
  width = lambda r: r["macro_auroc_ci"][1] - r["macro_auroc_ci"][0]
  assert width(by_patient) > 1.6 * width(by_record)  # about sqrt(5) = 2.2 in theory
  assert report.build(_table(50), n_bootstrap=10)["bootstrap"]["unit"] == "record"
  assert "over patients" in report.markdown(by_patient)


def test_risk_strata_counts_and_event_rates_by_hand():
  y = np.array([0, 0, 1, 0, 1, 1, 1, 0, 1, 1], np.float32)
  p = np.array([.01, .05, .1, .15, .2, .3, .5, .6, .9, np.nan])
  rows = clinical.risk_strata(y, p, [0.15, 0.5])
  assert [(s["n"], s["events"]) for s in rows] == [(3, 1), (3, 2), (3, 2)]  # p == cut: above
  assert rows[1]["event_rate"] == pytest.approx(2 / 3)
  assert rows[1]["event_rate_ci"] == pytest.approx(list(clinical.wilson_ci(2, 3)))
  assert rows[0]["range"] == [0.0, 0.15] and rows[2]["range"] == [0.5, 1.0]
  assert clinical.parse_strata("LAD=0.15, LM=0.01/0.2", ("LAD", "LM")) == {
      "LAD": [0.15], "LM": [0.01, 0.2]}
  for bad, why in (("RCA=0.1", "unknown label 'RCA'"), ("LAD=0.2/0.1", "increasing"),
                   ("LAD=x", "must be numbers"), ("LAD", "LABEL=CUT")):
    with pytest.raises(clinical.StrataError, match=why):
      clinical.parse_strata(bad, ("LAD", "LM"))


def test_threshold_is_chosen_on_validation_predictions_when_given():
  test, val = _table(300, seed=0), _table(300, seed=5)
  r = report.build(test, n_bootstrap=20, threshold_from=val)
  want = calibration.choose_threshold(val.y[:, 0], val.p[:, 0], calibration.parse_threshold(
      "youden"))
  assert r["per_label"]["LAD"]["threshold"] == pytest.approx(want)
  assert r["threshold_source"] == "validation"
  assert "chosen on the validation predictions" in report.markdown(r)
  own = report.build(test, n_bootstrap=20)
  assert own["threshold_source"] == "evaluated set"
  assert "chosen on the evaluated set" in report.markdown(own)
  assert report.build(test, n_bootstrap=20, threshold="0.4")["threshold_source"] == "fixed"


def test_grouped_inner_folds_keep_patients_whole():
  rng = np.random.default_rng(0)
  y = (rng.random(120) < 0.4).astype(int)
  groups = np.array([f"p{i // 3}" for i in range(120)])
  folds = probes.inner_folds(y, groups, 3, seed=0)
  for train, test in folds:
    assert not set(groups[train]) & set(groups[test])
    assert 0 < y[test].sum() < test.size
  x = rng.normal(size=(120, 4)) + y[:, None]
  a = probes.fit_predict_logreg(x, y[:, None].astype(float), x, groups=groups)
  assert np.isfinite(a).all()


def test_regression_table_round_trips_and_reports(tmp_path):
  pred = _table(200, task="regression")
  path = pred_lib.write_csv(str(tmp_path / "reg.csv"), pred)
  header = open(path).readline().strip().split(",")
  assert "target_age" in header and "pred_age" in header
  back = pred_lib.read_csv(path)
  assert back.task == "regression"
  np.testing.assert_allclose(back.y, pred.y, rtol=1e-6)
  r = report.build(back, n_bootstrap=200)
  m = r["per_target"]["age"]
  assert m["r2"] == pytest.approx(1 - np.sum((pred.p - pred.y) ** 2)
                                  / np.sum((pred.y - pred.y.mean()) ** 2), rel=1e-4)
  for k in ("mae", "rmse", "r2", "pearson", "spearman"):
    assert m[f"{k}_ci"][0] <= m[k] <= m[f"{k}_ci"][1]
  paths = report.write(r, str(tmp_path / "out"))
  assert any(p.endswith("regression.png") for p in paths)
  md = open(tmp_path / "out" / "report.md").read()
  assert "## Regression targets" in md and "| age | 200 |" in md
  assert "R2 [95% CI]" in report.text_table(r)
  with open(tmp_path / "mixed.csv", "w") as f:
    f.write("record_id,patient_id,fold,y_a,p_a,target_b,pred_b\nr,p,0,1,0.5,2,3\n")
  with pytest.raises(pred_lib.PredictionsError, match="mixes classification"):
    pred_lib.read_csv(str(tmp_path / "mixed.csv"))


def test_report_command_with_strata_ordinal_and_validation_thresholds(tmp_path):
  pred, val = _table(300, seed=0, patients_of=2), _table(300, seed=5)
  pred_lib.write_csv(str(tmp_path / "test.csv"), pred)
  pred_lib.write_csv(str(tmp_path / "val.csv"), val)
  grade = np.digitize(pred.p[:, 0] + np.random.default_rng(2).normal(0, 0.1, 300), [.3, .6])
  with open(tmp_path / "grades.csv", "w") as f:
    f.write("record_id,grade\n" + "".join(f"{r},{g}\n" for r, g in zip(pred.record_id, grade)))
  r = subprocess.run(
      [sys.executable, "finetune/report.py", "--predictions", str(tmp_path / "test.csv"),
       "--threshold_from", str(tmp_path / "val.csv"), "--strata", "LAD=0.15/0.5,LM=0.3",
       "--ordinal", "grade", "--covariates", str(tmp_path / "grades.csv"),
       "--bootstrap", "200", "--report", str(tmp_path / "out"), "--json"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  s = json.loads(r.stdout.strip().splitlines()[-1])
  assert s["bootstrap"]["unit"] == "patient" and s["threshold_source"] == "validation"
  assert [st["n"] for st in s["risk_strata"]["LAD"]] == [
      int(np.sum(pred.p[:, 0] < .15)), int(np.sum((pred.p[:, 0] >= .15) & (pred.p[:, 0] < .5))),
      int(np.sum(pred.p[:, 0] >= .5))]
  rho = s["spearman"]["per_label"]["LAD"]
  assert rho["rho"] == pytest.approx(stats.spearmanr(pred.p[:, 0], grade)[0], abs=1e-9)
  assert rho["rho_ci"][0] < rho["rho"] < rho["rho_ci"][1]
  assert "LAD risk strata" in r.stdout and "Spearman rho with grade" in r.stdout
  md = open(tmp_path / "out" / "report.md").read()
  assert "## Risk strata: LAD" in md and "## Rank correlation with `grade`" in md
  bad = subprocess.run([sys.executable, "finetune/report.py", "--predictions",
                        str(tmp_path / "test.csv"), "--strata", "RCA=0.2"],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "unknown label 'RCA'" in bad.stderr
  assert "Traceback" not in bad.stderr
