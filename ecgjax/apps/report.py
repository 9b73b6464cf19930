"""Evaluates a table of predictions made anywhere: the probe's metrics, report and plots.

  python finetune/report.py --predictions preds.csv --report out/ --threshold sens=0.9 --json

The CSV has columns record_id, patient_id, fold and, per label, y_<label> (0/1) and
p_<label> (probability); optional repeat and cv_fold columns (as `finetune/probe.py
--predictions_out` writes them) make it a repeated protocol with per-repeat and per-fold
numbers. Prints AUROC/AUPRC with 95% bootstrap CIs; --report writes report.json,
report.md and the PNG figures. A regression table (target_<name>, pred_<name> columns) is
scored with MAE, RMSE, R^2, Pearson and Spearman.

  python finetune/report.py --predictions run/predictions.csv \
      --threshold_from run/validation_predictions.csv --strata LAD=0.15,LM=0.01 \
      --ordinal stenosis_grade --covariates grades.csv --bootstrap_unit patient

--threshold_from: pick each label's operating point on these (validation) predictions and
apply it here (without it the report says the threshold was chosen on the evaluated set);
--strata: fixed cut points per label (LAD=0.05/0.15 for three strata) with event rates;
--ordinal: Spearman's rho of each probability with that column (of --covariates, a CSV with
record_id, or of the predictions CSV itself).

  python finetune/report.py --predictions run/predictions.csv --data ptbxl:PATH \
      --beats-by stratum --strata MI=0.2/0.5 --beats_label MI --report out/

--beats-by stratum|label (the AnyECG-CCTA figure): R-aligned median beats per lead of the
records in the predictions, read from --data, averaged per predicted risk stratum of
--beats_label (its --strata cut points) or per its truth (positives / negatives), with a 95%
band: REPORT/beats_by_<stratum|label>.png and .npz (times, leads, groups, mean, lo, hi, n).
Records without a usable beat are skipped and counted.
"""

import json

from absl import flags

from ecgjax import cli

_PREDICTIONS = flags.DEFINE_string("predictions", None, "predictions CSV")
_REPORT = flags.DEFINE_string("report", None, "directory for report.json, report.md, PNGs")
_LABELS = flags.DEFINE_list("labels", [], "evaluate only these labels")
_THRESHOLD = flags.DEFINE_string("threshold", "youden", "operating point: youden, a "
                                 "probability (0.5) or a target sensitivity (sens=0.9)")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "bootstrap resamples for the 95% CIs")
_SEED = flags.DEFINE_integer("seed", 0, "bootstrap seed")
_CAL_BINS = flags.DEFINE_integer("calibration_bins", 10, "bins of the calibration curve")
_CAL_STRATEGY = flags.DEFINE_enum("calibration_strategy", "quantile", ["quantile", "uniform"],
                                  "calibration bins with equal counts or equal widths")
_UNIT = flags.DEFINE_enum("bootstrap_unit", "auto", ["auto", "patient", "record"],
                          "resample patients (their records together) or records; auto: "
                          "patients when any patient id repeats")
_THRESHOLD_FROM = flags.DEFINE_string("threshold_from", None, "validation predictions CSV "
                                      "the operating thresholds are chosen on")
_STRATA = flags.DEFINE_string("strata", None, "risk strata cut points per label, e.g. "
                              "LAD=0.15,LM=0.01 or LAD=0.05/0.15")
_ORDINAL = flags.DEFINE_string("ordinal", None, "column to correlate each probability with "
                               "(Spearman), e.g. a stenosis grade")
_COVARIATES = flags.DEFINE_string("covariates", None, "CSV with record_id and the --ordinal "
                                  "column (default: the predictions CSV)")
_DATA = flags.DEFINE_string("data", None, "data spec of the predicted records (--beats-by)")
_BEATS_BY = flags.DEFINE_enum("beats_by", None, ["stratum", "label"],
                              "median beats per lead averaged per predicted risk stratum or "
                              "per label (needs --data and --report)")
flags.DEFINE_alias("beats-by", "beats_by")
_BEATS_LABEL = flags.DEFINE_string("beats_label", None, "label whose strata or truth groups "
                                   "the beats (default: the first)")
_JSON = flags.DEFINE_bool("json", False, "print the results as one JSON object, last line")
flags.mark_flags_as_required(["predictions"])


def main(argv):
  del argv
  from ecgjax.eval import predictions as pred_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.eval import report as report_lib  # pylint: disable=g-import-not-at-top

  if _BEATS_BY.value and not (_DATA.value and _REPORT.value):
    cli.fail("--beats-by needs --data (the records' signals) and --report (where the figure "
             "goes)")
  try:
    pred = pred_lib.read_csv(_PREDICTIONS.value)
    if _LABELS.value:
      pred = pred.select(_LABELS.value)
    plan = _beats_plan(pred) if _BEATS_BY.value else None
    val = (pred_lib.read_csv(_THRESHOLD_FROM.value) if _THRESHOLD_FROM.value else None)
    ordinal = None
    if _ORDINAL.value:
      ordinal = (_ORDINAL.value, pred_lib.column(_COVARIATES.value or _PREDICTIONS.value,
                                                 _ORDINAL.value, pred.record_id))
    r = report_lib.build(pred, threshold=_THRESHOLD.value, n_bootstrap=_BOOTSTRAP.value,
                         seed=_SEED.value, calibration_bins=_CAL_BINS.value,
                         calibration_strategy=_CAL_STRATEGY.value,
                         bootstrap_unit=_UNIT.value, threshold_from=val,
                         strata=_STRATA.value, ordinal=ordinal,
                         meta={"title": f"Evaluation of {_PREDICTIONS.value}",
                               "protocol": "predictions",
                               "predictions_file": _PREDICTIONS.value})
  except (ValueError, OSError) as e:
    cli.fail(str(e))
  print(report_lib.text_table(r, title=f"{_PREDICTIONS.value}: {r['n_rows']} predictions of "
                                       f"{r['n_records']} records"))
  if _REPORT.value:
    paths = report_lib.write(r, _REPORT.value, seed=_SEED.value)
    print(f"wrote {len(paths)} report files to {_REPORT.value}")
  if _BEATS_BY.value:
    r["beats"] = _beats(pred, *plan)
  if _JSON.value:
    print(json.dumps(report_lib.json_safe(report_lib.summary(r)), allow_nan=False),
          flush=True)


def _beats_plan(pred) -> tuple[str, list[float]]:
  """--beats_label and its cut points, checked before any work is done."""
  from ecgjax.eval import clinical  # pylint: disable=g-import-not-at-top
  names = list(pred.label_names)
  label = _BEATS_LABEL.value or names[0]
  if label not in names:
    cli.fail(f"--beats_label={label!r}: the predictions have {', '.join(names)}")
  cuts: list[float] = []
  if _BEATS_BY.value == "stratum":
    cuts = clinical.parse_strata(_STRATA.value or "", names).get(label, [])
    if not cuts:
      cli.fail(f"--beats-by stratum needs --strata with cut points for {label} "
               f"(e.g. --strata {label}=0.2/0.5)")
  return label, cuts


def _beats(pred, label: str, cuts: list[float]) -> dict:
  """The --beats-by figure and arrays; returns what the JSON summary reports."""
  import os  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ecgjax.data import sources  # pylint: disable=g-import-not-at-top
  from ecgjax.explain import group_beats  # pylint: disable=g-import-not-at-top
  k, by = list(pred.label_names).index(label), _BEATS_BY.value
  values = pred.p[:, k] if by == "stratum" else pred.y[:, k]
  groups, order = group_beats.groups_of(pred.record_id, values, by=by, label=label, cuts=cuts)
  gb = group_beats.group_beats(sources.open_source(_DATA.value), groups, order=order)
  stem = os.path.join(_REPORT.value, f"beats_by_{by}")
  group_beats.plot(gb, stem + ".png", title=f"median beats of {_DATA.value} per "
                   f"{'predicted risk stratum' if by == 'stratum' else 'label'} of {label} "
                   "(mean, 95% band)")
  np.savez_compressed(stem + ".npz", times=gb.times, leads=np.array(gb.leads),
                      groups=np.array(gb.groups), mean=gb.mean, lo=gb.lo, hi=gb.hi, n=gb.n)
  counts = ", ".join(f"{g}: {n}" for g, n in zip(gb.groups, gb.n))
  skipped = sum(gb.skipped.values())
  why = "; ".join(f"{n} {reason}" for reason, n in sorted(gb.skipped.items()))
  print(f"beats by {by} of {label}: {counts} records; {skipped} skipped"
        f"{' (' + why + ')' if why else ''}; wrote {stem}.png")
  return {"by": by, "label": label, "groups": dict(zip(gb.groups, gb.n.tolist())),
          "skipped": gb.skipped}


def run() -> None:
  """Console entry point (`ecgjax-report`; `python finetune/report.py` in a checkout)."""
  cli.run(main)


if __name__ == "__main__":
  run()
