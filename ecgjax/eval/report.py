"""Every number of an evaluation from its predictions table; JSON and Markdown reports.

`build` takes a `Predictions` table (one or more repeats) and returns a JSON-ready dict:

- per label and macro: AUROC and AUPRC with percentile-bootstrap 95% intervals over records
  (see `bootstrap`); with several repeats, the point estimate is the mean over repeats and
  the per-repeat values, their mean and sample standard deviation are listed too;
- per label at the chosen threshold: sensitivity, specificity, precision, NPV, F1; Brier
  score, calibration curve and ECE, decision curve; these use all scored rows pooled
  (for cross-validation, the out-of-fold predictions); their macro means over labels;
- per cross-validation fold: macro and per-label AUROC (NaN where a fold's labels or its
  training labels held a single class).

`write` puts report.json (everything), report.md (the tables a person reads) and the
PNG figures of `plots` into a directory.
"""

from __future__ import annotations

from collections.abc import Sequence
import json
import math
import os
from typing import Any
import warnings

import numpy as np

from ecgjax.eval import bootstrap, calibration, clinical
from ecgjax.eval import predictions as pred_lib

JSON_FILE = "report.json"
MD_FILE = "report.md"
_PROTOCOL_TEXT = {
    "split": "explicit train/test split",
    "reshuffle": "stratified reshuffled development/test splits",
    "groupcv": "stratified group K-fold cross-validation by patient",
    "predictions": "predictions table evaluated as given",
}


def json_safe(value: Any) -> Any:
  """NaN/inf -> None, NumPy scalars/arrays -> Python, recursively (strict JSON)."""
  if isinstance(value, dict):
    return {str(k): json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [json_safe(v) for v in value]
  if isinstance(value, np.ndarray):
    return json_safe(value.tolist())
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def mean_std(values: Sequence[float]) -> tuple[float, float]:
  """Mean and sample std (ddof 1; NaN for one value) of the finite values."""
  v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
  if not v.size:
    return math.nan, math.nan
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan


def nanmean(values) -> float:
  """Mean of the finite values; NaN when there are none."""
  v = np.asarray(list(values), np.float64)
  v = v[np.isfinite(v)]
  return float(v.mean()) if v.size else math.nan


def unit_scores(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
  """AUROC and AUPRC of the rows with a prediction; NaN when they hold one class."""
  keep = np.isfinite(p)
  if not keep.any():
    return math.nan, math.nan
  a, ap = bootstrap.weighted_auroc_auprc(y[keep], p[keep], np.ones((1, int(keep.sum()))))
  return float(a[0]), float(ap[0])


def _per_fold(pred: pred_lib.Predictions) -> list[dict[str, Any]]:
  out = []
  for r in np.unique(pred.repeat):
    for f in np.unique(pred.cv_fold[pred.repeat == r]):
      rows = np.flatnonzero((pred.repeat == r) & (pred.cv_fold == f))
      per = {l: unit_scores(pred.y[rows, j], pred.p[rows, j])[0]
             for j, l in enumerate(pred.label_names)}
      out.append({"repeat": int(r), "cv_fold": int(f), "n": int(rows.size),
                  "macro_auroc": nanmean(per.values()), "per_label": per})
  return out


def _curves(y: np.ndarray, p: np.ndarray, rec_idx: np.ndarray, weights: np.ndarray,
            n_band: int = 200) -> dict[str, Any]:
  """ROC and PR curves on fixed grids with 95% bands from the first n_band resamples."""
  tpr, prec = bootstrap.weighted_curves(y, p, np.ones((1, y.size)))
  tpr_b, prec_b = bootstrap.weighted_curves(y, p, weights[:n_band][:, rec_idx])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # grid points where every band is NaN
    q = lambda a, level: np.nanquantile(a, level, 0)
    return {"roc": {"fpr": bootstrap.CURVE_GRID, "tpr": tpr[0], "tpr_lo": q(tpr_b, 0.025),
                    "tpr_hi": q(tpr_b, 0.975)},
            "pr": {"recall": bootstrap.CURVE_GRID, "precision": prec[0],
                   "precision_lo": q(prec_b, 0.025), "precision_hi": q(prec_b, 0.975)}}


def _label(name: str, y: np.ndarray, p: np.ndarray, rec_idx: np.ndarray,
           repeats: list[np.ndarray], weights: np.ndarray, rule: calibration.ThresholdRule,
           n_bins: int, strategy: str, notes: list[str]):
  """(metrics dict, curves dict or None, bootstrap result) of one label; a rule of kind
  "fixed" is applied as is (a threshold chosen elsewhere, on validation predictions)."""
  b = bootstrap.bootstrap_label(y, p, rec_idx, repeats, weights)
  reps = [unit_scores(y[rows], p[rows]) for rows in repeats]
  keep = np.isfinite(p)
  n_missing = int((~keep).sum())
  if n_missing:
    notes.append(f"{name}: {n_missing} scored row(s) have no prediction (a training split "
                 "held a single class); metrics use the other rows")
  if b.n_skipped:
    notes.append(f"{name}: {b.n_skipped} of {len(weights)} bootstrap resamples held a "
                 "single class and were skipped")
  if b.n_undefined_repeats:
    notes.append(f"{name}: {b.n_undefined_repeats} repeat(s) scored a single class and "
                 "were left out of its mean")
  n_rep = [int(np.sum(keep[rows])) for rows in repeats]
  pos_rep = [int(np.sum(y[rows][keep[rows]] > 0.5)) for rows in repeats]
  m: dict[str, Any] = {
      "auroc": b.auroc, "auroc_ci": list(b.auroc_ci),
      "auprc": b.auprc, "auprc_ci": list(b.auprc_ci),
      # Per test set: for cross-validation every record, for reshuffles the mean test split.
      "n_pos": int(round(np.mean(pos_rep))), "n": int(round(np.mean(n_rep))),
      "prevalence": float(np.sum(pos_rep) / max(np.sum(n_rep), 1)),
      "auroc_std": mean_std([a for a, _ in reps])[1], "auroc_repeats": [a for a, _ in reps],
      "auprc_repeats": [ap for _, ap in reps], "n_missing": n_missing,
      "bootstrap_skipped": b.n_skipped,
  }
  yk, pk = y[keep], p[keep]
  if not 0 < np.sum(yk > 0.5) < yk.size:
    return m, None, b
  extra = calibration.label_report(yk, pk, rule, n_bins=n_bins, strategy=strategy)
  m.update(extra["operating_point"])
  m.update(brier=extra["brier"], ece=extra["ece"])
  curves = {"calibration": extra["calibration"], "decision_curve": extra["decision_curve"],
            **_curves(yk, pk, rec_idx[keep], weights)}
  return m, curves, b


def build(pred: pred_lib.Predictions, *, threshold: str = "youden", n_bootstrap: int = 1000,
          seed: int = 0, calibration_bins: int = 10, calibration_strategy: str = "quantile",
          bootstrap_unit: str = "auto", threshold_from: pred_lib.Predictions | None = None,
          strata: str | dict[str, list[float]] | None = None,
          ordinal: tuple[str, np.ndarray] | None = None,
          meta: dict[str, Any] | None = None) -> dict[str, Any]:
  """The full report dict of a predictions table (see the module docstring).

  bootstrap_unit: patient (records of a patient resampled together), record, or auto
  (patient when any patient id repeats). threshold_from: validation predictions the
  threshold rule picks each label's operating point on (otherwise it is chosen on the
  evaluated rows, and the report says so). strata: risk strata cut points per label
  (`clinical.parse_strata`). ordinal: (column name, value per row) for Spearman's rho of each
  label's probability with it. A regression table gets `regression_report` instead."""
  if n_bootstrap < 1:
    raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
  records, first, rec_idx = np.unique(pred.record_id, return_index=True, return_inverse=True)
  weights, unit = bootstrap.resample_weights(pred.patient_id[first], n_bootstrap, seed,
                                             bootstrap_unit)
  boot_meta = {"n_resamples": n_bootstrap, "seed": seed, "level": 0.95, "unit": unit,
               "method": "percentile"}
  if pred.task == "regression":
    return regression_report(pred, rec_idx, weights, boot_meta, meta)
  rule = calibration.parse_threshold(threshold)
  source = "fixed" if rule.kind == "fixed" else (
      "validation" if threshold_from is not None else "evaluated set")
  repeats = pred.repeats
  notes: list[str] = []
  per_label, curves, boots = {}, {}, {}
  for j, name in enumerate(pred.label_names):
    label_rule = rule
    if source == "validation":
      if name not in threshold_from.label_names:
        raise pred_lib.PredictionsError(f"the validation predictions have no label {name!r}")
      k = threshold_from.label_names.index(name)
      ok = np.isfinite(threshold_from.p[:, k])
      label_rule = calibration.ThresholdRule("fixed", calibration.choose_threshold(
          threshold_from.y[ok, k], threshold_from.p[ok, k], rule))
    m, c, boots[name] = _label(name, pred.y[:, j], pred.p[:, j], rec_idx, repeats, weights,
                               label_rule, calibration_bins, calibration_strategy, notes)
    m["threshold_source"] = source
    per_label[name] = m
    if c is not None:
      curves[name] = c
  defined = [l for l in pred.label_names if math.isfinite(per_label[l]["auroc"])]
  excluded = [l for l in pred.label_names if l not in defined]
  if excluded:
    notes.append(f"left out of the macro means (a single class among the scored rows): "
                 f"{', '.join(excluded)}")
  macro = {}
  for key in ("auroc", "auprc"):
    samples = (np.mean([getattr(boots[l], f"{key}_samples") for l in defined], 0)
               if defined else np.full(n_bootstrap, np.nan))
    per_rep = [nanmean(per_label[l][f"{key}_repeats"][r] for l in defined)
               for r in range(len(repeats))]
    mean, std = mean_std(per_rep)
    macro.update({
        f"macro_{key}": nanmean(per_label[l][key] for l in defined),
        f"macro_{key}_ci": list(bootstrap.percentile_ci(samples)),
        f"macro_{key}_mean": mean, f"macro_{key}_std": std, f"macro_{key}_repeats": per_rep,
    })
  for key in ("sensitivity", "specificity", "precision", "f1", "brier"):
    macro[f"macro_{key}"] = nanmean(per_label[l].get(key, math.nan) for l in defined)
  macro_skipped = int(np.sum(~np.isfinite(np.mean(
      [boots[l].auroc_samples for l in defined], 0)))) if defined else n_bootstrap
  if defined and macro_skipped:
    notes.append(f"macro: {macro_skipped} of {n_bootstrap} bootstrap resamples left a label "
                 "with a single class and were skipped")
  folds = _per_fold(pred) if len(np.unique(pred.cv_fold)) > 1 else []
  fold_mean, fold_std = mean_std([f["macro_auroc"] for f in folds])
  report = {
      **(meta or {}),
      **macro,
      "per_label": per_label,
      "label_names": list(pred.label_names),
      "n_records": int(len(records)),
      "n_patients": int(len(np.unique(pred.patient_id))),
      "n_rows": int(len(pred.record_id)),
      "n_repeats": len(repeats),
      "n_excluded": len(excluded), "excluded": excluded,
      "threshold_rule": str(rule), "threshold_source": source,
      "bootstrap": {**boot_meta, "macro_skipped": macro_skipped},
      "calibration": {"bins": calibration_bins, "strategy": calibration_strategy},
      "per_fold": folds,
      "fold_macro_auroc_mean": fold_mean, "fold_macro_auroc_std": fold_std,
      "notes": notes,
      "curves": curves,
  }
  if strata:
    cuts = strata if isinstance(strata, dict) else clinical.parse_strata(strata, pred.label_names)
    report["risk_strata"] = clinical.strata_report(pred.y, pred.p, list(pred.label_names), cuts)
  if ordinal is not None:
    col, values = ordinal
    report["spearman"] = {"column": col, "per_label": {
        l: clinical.spearman(pred.p[:, j], np.asarray(values, np.float64), rec_idx, weights)
        for j, l in enumerate(pred.label_names)}}
  report.setdefault("protocol", "predictions")
  return report


def regression_report(pred: pred_lib.Predictions, rec_idx: np.ndarray, weights: np.ndarray,
                      boot_meta: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
  """The report of a regression table: `clinical.regression_scores` per target (all rows
  pooled over repeats) and the points of the predicted-vs-true figure."""
  per = {name: clinical.regression_scores(pred.y[:, j], pred.p[:, j], rec_idx, weights)
         for j, name in enumerate(pred.label_names)}
  report = {
      **(meta or {}), "task": "regression", "per_target": per,
      "label_names": list(pred.label_names),
      "n_records": int(len(np.unique(pred.record_id))),
      "n_patients": int(len(np.unique(pred.patient_id))),
      "n_rows": int(len(pred.record_id)), "n_repeats": len(pred.repeats),
      "bootstrap": boot_meta, "notes": [], "per_fold": [],
      "curves": {name: {"y": pred.y[:, j], "p": pred.p[:, j]}
                 for j, name in enumerate(pred.label_names)},
  }
  report.setdefault("protocol", "predictions")
  return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
  """The report without its curve arrays (what the --json line prints)."""
  return {k: v for k, v in report.items() if k not in ("curves", "tsne")}


def text_table(r: dict[str, Any], *, title: str | None = None) -> str:
  """A fixed-width console table: AUROC and AUPRC with 95% CIs and positives per label (a
  regression report: MAE, RMSE, R^2 and Spearman per target)."""
  if r.get("task") == "regression":
    return _regression_table(r, title)
  names = list(r["per_label"])
  width = max([len("label"), len("macro")] + [len(n) for n in names])
  ci = lambda v, c: (f"{v:.3f} [{_f(c[0])}, {_f(c[1])}]" if math.isfinite(v)
                     else "nan")
  head = f"{'label':<{width}}  {'AUROC [95% CI]':<22}  {'AUPRC [95% CI]':<22}  {'n_pos':>5}"
  lines = ([title] if title else []) + [head, "-" * len(head)]
  for n in names:
    m = r["per_label"][n]
    lines.append(f"{n:<{width}}  {ci(m['auroc'], m['auroc_ci']):<22}  "
                 f"{ci(m['auprc'], m['auprc_ci']):<22}  {m['n_pos']:>5d}")
  lines.append("-" * len(head))
  lines.append(f"{'macro':<{width}}  {ci(r['macro_auroc'], r['macro_auroc_ci']):<22}  "
               f"{ci(r['macro_auprc'], r['macro_auprc_ci']):<22}")
  if r["n_repeats"] > 1:
    lines.append(f"over {r['n_repeats']} repeats: macro AUROC {_f(r['macro_auroc_mean'])} "
                 f"+- {_f(r['macro_auroc_std'])}, macro AUPRC {_f(r['macro_auprc_mean'])} "
                 f"+- {_f(r['macro_auprc_std'])}")
  if r["n_excluded"]:
    lines.append(f"({r['n_excluded']} label(s) with a single class left out of the macro "
                 f"means: {', '.join(r['excluded'])})")
  for label, rows in (r.get("risk_strata") or {}).items():
    lines.append(f"{label} risk strata: " + "; ".join(
        f"[{s['range'][0]:g}, {s['range'][1]:g}) {s['events']}/{s['n']} events "
        f"({_f(s['event_rate'])} [{_f(s['event_rate_ci'][0])}, {_f(s['event_rate_ci'][1])}])"
        for s in rows))
  if r.get("spearman"):
    sp = r["spearman"]
    lines.append(f"Spearman rho with {sp['column']}: " + "; ".join(
        f"{l} {_f(v['rho'])} [{_f(v['rho_ci'][0])}, {_f(v['rho_ci'][1])}]"
        for l, v in sp["per_label"].items()))
  for pt in r.get("label_efficiency") or []:
    lines.append(f"label efficiency: {pt['train_size']} training records (mean "
                 f"{pt['n_train']:.0f}): macro AUROC {_f(pt['macro_auroc_mean'])} +- "
                 f"{_f(pt['macro_auroc_std'])} over {pt['n_runs']} run(s)")
  return "\n".join(lines)


def _regression_table(r: dict[str, Any], title: str | None) -> str:
  names = r["label_names"]
  width = max([len("target")] + [len(n) for n in names])
  keys = ("mae", "rmse", "r2", "spearman")
  head = f"{'target':<{width}}  " + "  ".join(f"{k.upper() + ' [95% CI]':<24}" for k in keys)
  lines = ([title] if title else []) + [head, "-" * len(head)]
  for n in names:
    m = r["per_target"][n]
    lines.append(f"{n:<{width}}  " + "  ".join(
        f"{_f(m[k]) + ' [' + _f(m[k + '_ci'][0]) + ', ' + _f(m[k + '_ci'][1]) + ']':<24}"
        for k in keys))
  return "\n".join(lines)


def _f(v: Any, digits: int = 3) -> str:
  return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (
      f"{v:.{digits}f}")


def _ci(v: float, ci: Sequence[float]) -> str:
  if not math.isfinite(v):
    return "–"
  return f"{v:.3f} ({_f(ci[0])}–{_f(ci[1])})"


def _protocol_line(r: dict[str, Any]) -> str:
  p = r.get("protocol", "predictions")
  text = _PROTOCOL_TEXT.get(p, p)
  d = r.get("protocol_details", {})
  bits = []
  if p == "groupcv":
    bits.append(f"{d.get('folds', '?')} folds")
  if p == "reshuffle":
    bits.append(f"test fraction {d.get('test_fraction', 0.2):g}")
  if d.get("seeds"):
    bits.append(f"seeds {', '.join(map(str, d['seeds']))}")
  if d.get("repeats", 1) > 1:
    bits.append(f"{d['repeats']} repeats per seed")
  return text + (f" ({'; '.join(bits)})" if bits else "")


def markdown(r: dict[str, Any], figures: Sequence[tuple[str, str]] = ()) -> str:
  """The Markdown summary of a `build` report; `figures` are (caption, file) pairs."""
  title = r.get("title") or "Evaluation report"
  lines = [f"# {title}", ""]
  lines.append(f"- Protocol: {_protocol_line(r)}; {r['n_records']} records from "
               f"{r['n_patients']} patients, {r['n_repeats']} repeat(s).")
  if r.get("probe"):
    lines.append(f"- Probe: `{r['probe']}` on "
                 f"{', '.join('`%s`' % s for s in r.get('sources', [])) or 'embeddings'}"
                 + (" (min-max normalised on each training split, concatenated)"
                    if len(r.get("sources", [])) > 1 else "") + ".")
  if r.get("data"):
    lines.append(f"- Data: {', '.join('`%s`' % d for d in r['data'])}.")
  bs = r["bootstrap"]
  unit = {"patient": "patients (a patient's records together)"}.get(bs.get("unit"), "records")
  lines.append(f"- 95% CIs: percentile bootstrap over {unit}, {bs['n_resamples']} resamples "
               f"(seed {bs['seed']})" + (", of the mean over repeats" if r["n_repeats"] > 1
                                         else "") + ".")
  if r.get("task") == "regression":
    return _regression_markdown(r, lines, figures)
  source = r.get("threshold_source", "evaluated set")
  lines.append(f"- Operating point: threshold `{r['threshold_rule']}`" + {
      "validation": " chosen on the validation predictions, applied to these",
      "evaluated set": " chosen on the evaluated set (optimistic: no held-out choice)",
  }.get(source, "") + "; calibration, Brier and decision curves pool all scored rows.")
  lines += ["", "## Discrimination, operating point and calibration", "",
            "| label | pos / n | AUROC (95% CI) | AUPRC (95% CI) | threshold | sens | spec | "
            "PPV | F1 | Brier |", "|" + "---|" * 10]
  for name, m in r["per_label"].items():
    lines.append(f"| {name} | {m['n_pos']} / {m['n']} | {_ci(m['auroc'], m['auroc_ci'])} | "
                 f"{_ci(m['auprc'], m['auprc_ci'])} | {_f(m.get('threshold'))} | "
                 f"{_f(m.get('sensitivity'), 2)} | {_f(m.get('specificity'), 2)} | "
                 f"{_f(m.get('precision'), 2)} | {_f(m.get('f1'), 2)} | "
                 f"{_f(m.get('brier'))} |")
  lines.append(f"| **macro** | | **{_ci(r['macro_auroc'], r['macro_auroc_ci'])}** | "
               f"**{_ci(r['macro_auprc'], r['macro_auprc_ci'])}** | | "
               f"{_f(r.get('macro_sensitivity'), 2)} | {_f(r.get('macro_specificity'), 2)} | "
               f"{_f(r.get('macro_precision'), 2)} | {_f(r.get('macro_f1'), 2)} | "
               f"{_f(r.get('macro_brier'))} |")
  if r["n_repeats"] > 1:
    lines += ["", "## Repeats", "", "| repeat | macro AUROC | macro AUPRC |", "|---|---|---|"]
    for i, (a, p) in enumerate(zip(r["macro_auroc_repeats"], r["macro_auprc_repeats"])):
      lines.append(f"| {i} | {_f(a)} | {_f(p)} |")
    lines.append(f"| **mean ± std** | **{_f(r['macro_auroc_mean'])} ± "
                 f"{_f(r['macro_auroc_std'])}** | **{_f(r['macro_auprc_mean'])} ± "
                 f"{_f(r['macro_auprc_std'])}** |")
  if r.get("per_fold"):
    labels = r["label_names"]
    lines += ["", "## Cross-validation folds (AUROC)", "",
              "| repeat | fold | n | macro | " + " | ".join(labels) + " |",
              "|" + "---|" * (4 + len(labels))]
    for f in r["per_fold"]:
      lines.append(f"| {f['repeat']} | {f['cv_fold']} | {f['n']} | {_f(f['macro_auroc'])} | "
                   + " | ".join(_f(f["per_label"][l]) for l in labels) + " |")
    lines.append(f"\nFold macro AUROC: {_f(r['fold_macro_auroc_mean'])} ± "
                 f"{_f(r['fold_macro_auroc_std'])} (mean ± std over folds).")
  le = r.get("label_efficiency")
  if le:
    lines += ["", "## Label efficiency", "",
              "| train records | runs | macro AUROC mean ± std | macro AUPRC mean ± std |",
              "|---|---|---|---|"]
    for pt in le:
      lines.append(f"| {pt['train_size']} (n={_f(pt['n_train'], 0)}) | {pt['n_runs']} | "
                   f"{_f(pt['macro_auroc_mean'])} ± {_f(pt['macro_auroc_std'])} | "
                   f"{_f(pt['macro_auprc_mean'])} ± {_f(pt['macro_auprc_std'])} |")
  for label, rows in (r.get("risk_strata") or {}).items():
    lines += ["", f"## Risk strata: {label}", "",
              "| stratum | predicted probability | n | share | events | event rate (95% CI) |",
              "|---|---|---|---|---|---|"]
    for st in rows:
      lines.append(f"| {st['stratum'] + 1} | {st['range'][0]:g} – {st['range'][1]:g} | "
                   f"{st['n']} | {st['share']:.1%} | {st['events']} | "
                   f"{_ci(st['event_rate'], st['event_rate_ci'])} |")
    lines.append("\nEvent rates with Wilson score 95% intervals.")
  if r.get("spearman"):
    sp = r["spearman"]
    lines += ["", f"## Rank correlation with `{sp['column']}`", "",
              "| label | n | Spearman rho (95% CI) |", "|---|---|---|"]
    for l, v in sp["per_label"].items():
      lines.append(f"| {l} | {v['n']} | {_ci(v['rho'], v['rho_ci'])} |")
  lines += _figures_and_notes(r, figures)
  return "\n".join(lines).rstrip() + "\n"


def _figures_and_notes(r: dict[str, Any], figures: Sequence[tuple[str, str]]) -> list[str]:
  lines = []
  if figures:
    lines += ["", "## Figures", ""]
    for caption, path in figures:
      lines += [f"**{caption}**", "", f"![{caption}]({path})", ""]
  if r.get("notes"):
    lines += ["", "## Notes", ""] + [f"- {n}" for n in r["notes"]]
  if any(str(d).startswith("ptbxl") for d in r.get("data", [])):
    lines += ["", "Data: PTB-XL (Wagner et al., Scientific Data 2020), CC BY 4.0."]
  return lines


def _regression_markdown(r: dict[str, Any], lines: list[str],
                         figures: Sequence[tuple[str, str]]) -> str:
  lines += ["", "## Regression targets", "",
            "| target | n | MAE | RMSE | R² | Pearson r | Spearman rho |", "|" + "---|" * 7]
  for n, m in r["per_target"].items():
    lines.append(f"| {n} | {m['n']} | " + " | ".join(
        _ci(m[k], m[f"{k}_ci"]) for k in ("mae", "rmse", "r2", "pearson", "spearman")) + " |")
  lines += _figures_and_notes(r, figures)
  return "\n".join(lines).rstrip() + "\n"


def write(r: dict[str, Any], directory: str, *, embeddings: dict[str, np.ndarray] | None = None,
          tsne_labels: np.ndarray | None = None, tsne_max: int = 500, seed: int = 0
          ) -> list[str]:
  """Writes report.json, report.md and the figures; returns the paths written.

  embeddings: {source name: (N, D)} with `tsne_labels` (N, L) for the t-SNE figure.
  """
  from ecgjax.eval import plots  # matplotlib only when a report is written
  os.makedirs(directory, exist_ok=True)
  figures = plots.write_all(r, directory, embeddings=embeddings, tsne_labels=tsne_labels,
                            tsne_max=tsne_max, seed=seed)
  paths = [os.path.join(directory, f) for _, f in figures]
  with open(os.path.join(directory, JSON_FILE), "w") as f:
    json.dump(json_safe(r), f, indent=1, allow_nan=False)
  with open(os.path.join(directory, MD_FILE), "w") as f:
    f.write(markdown(r, figures))
  return [os.path.join(directory, JSON_FILE), os.path.join(directory, MD_FILE)] + paths
