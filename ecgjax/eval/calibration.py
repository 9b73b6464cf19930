"""Operating points, calibration and decision curves of one label's predicted probabilities.

Thresholds (`parse_threshold`): "youden" maximises sensitivity + specificity - 1 over the
ROC thresholds; a number in (0, 1) is used as is; "sens=0.9" is the highest threshold
whose sensitivity reaches 0.9 (the most specific operating point with that sensitivity).
A record is called positive when its probability is >= the threshold. The data-driven
thresholds are chosen on the predictions being evaluated, which flatters sensitivity and
specificity a little; pass a fixed number chosen elsewhere for an unbiased operating point.

Decision curves (Vickers & Elkin 2006): net benefit at threshold probability t is
TP/N - FP/N * t / (1 - t); "treat all" is prevalence - (1 - prevalence) t / (1 - t) and
"treat none" is 0.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from sklearn import metrics as skm

# Threshold probabilities of the decision curve: 1% steps up to 99%.
DCA_GRID: np.ndarray = np.round(np.arange(0.01, 1.0, 0.01), 2)


@dataclasses.dataclass(frozen=True)
class ThresholdRule:
  """How to pick the operating point: "youden", "fixed" (value) or "sensitivity" (target)."""
  kind: str
  value: float = math.nan

  def __str__(self) -> str:
    if self.kind == "youden":
      return "youden"
    return f"{self.value:g}" if self.kind == "fixed" else f"sens={self.value:g}"


def parse_threshold(text: str) -> ThresholdRule:
  """'youden' | '0.5' | 'sens=0.9' -> ThresholdRule; ValueError says what is accepted."""
  t = str(text).strip().lower()
  hint = "expected 'youden', a probability such as 0.5, or 'sens=0.9'"
  if t == "youden":
    return ThresholdRule("youden")
  if t.startswith("sens="):
    try:
      v = float(t[5:])
    except ValueError:
      raise ValueError(f"bad threshold {text!r}: {hint}") from None
    if not 0.0 < v <= 1.0:
      raise ValueError(f"bad threshold {text!r}: the target sensitivity must be in (0, 1]")
    return ThresholdRule("sensitivity", v)
  try:
    v = float(t)
  except ValueError:
    raise ValueError(f"bad threshold {text!r}: {hint}") from None
  if not 0.0 < v < 1.0:
    raise ValueError(f"bad threshold {text!r}: a fixed threshold must be in (0, 1)")
  return ThresholdRule("fixed", v)


def choose_threshold(y: np.ndarray, p: np.ndarray, rule: ThresholdRule) -> float:
  """The threshold `rule` picks for labels y and probabilities p (NaN if undefined)."""
  if rule.kind == "fixed":
    return rule.value
  y = np.asarray(y) > 0.5
  if y.all() or not y.any():
    return math.nan
  fpr, tpr, thr = skm.roc_curve(y, p, drop_intermediate=False)
  thr = np.minimum(thr, 1.0)  # sklearn's first threshold is +inf (nothing called positive)
  if rule.kind == "youden":
    return float(thr[int(np.argmax(tpr - fpr))])
  # Thresholds decrease along the curve: the first one to reach the target is the highest.
  reach = np.flatnonzero(tpr >= rule.value - 1e-12)
  return float(thr[reach[0]])


def operating_point(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
  """Sensitivity, specificity, precision (PPV), NPV, F1 and counts at `threshold`."""
  y = np.asarray(y) > 0.5
  pred = np.asarray(p) >= threshold if math.isfinite(threshold) else np.zeros(len(y), bool)
  tp, fp = int(np.sum(pred & y)), int(np.sum(pred & ~y))
  fn, tn = int(np.sum(~pred & y)), int(np.sum(~pred & ~y))
  div = lambda a, b: a / b if b else math.nan
  sens, ppv = div(tp, tp + fn), div(tp, tp + fp)
  nan_thr = not math.isfinite(threshold)
  return {
      "threshold": float(threshold),
      "sensitivity": math.nan if nan_thr else sens,
      "specificity": math.nan if nan_thr else div(tn, tn + fp),
      "precision": math.nan if nan_thr else ppv,
      "npv": math.nan if nan_thr else div(tn, tn + fn),
      "f1": math.nan if nan_thr else div(2 * tp, 2 * tp + fp + fn),
      "tp": tp, "fp": fp, "tn": tn, "fn": fn,
  }


def brier(y: np.ndarray, p: np.ndarray) -> float:
  """Mean squared difference between probability and outcome."""
  y = (np.asarray(y) > 0.5).astype(np.float64)
  return float(np.mean((np.asarray(p, np.float64) - y) ** 2)) if y.size else math.nan


def calibration_curve(y: np.ndarray, p: np.ndarray, *, n_bins: int = 10,
                      strategy: str = "quantile") -> dict[str, Any]:
  """Mean predicted vs observed frequency per bin ("quantile" or "uniform" bins on [0, 1]).

  Empty bins are dropped; "count" is the number of records per kept bin. Quantile bins
  that coincide (many tied probabilities) are merged. "histogram" holds counts of the
  predictions in 20 equal-width bins (for plotting).
  """
  if strategy not in ("quantile", "uniform"):
    raise ValueError(f"calibration strategy must be 'quantile' or 'uniform', got {strategy!r}")
  if n_bins < 1:
    raise ValueError(f"calibration needs at least 1 bin, got {n_bins}")
  y = (np.asarray(y) > 0.5).astype(np.float64)
  p = np.asarray(p, np.float64)
  if strategy == "quantile":
    edges = np.unique(np.quantile(p, np.linspace(0, 1, n_bins + 1)))
  else:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
  # Inner edges only: the first and last bins take everything below / above them.
  idx = np.searchsorted(edges[1:-1], p)  # bins (a, b], as sklearn's calibration_curve
  out = {"mean_predicted": [], "observed": [], "count": [], "bin_lower": [], "bin_upper": []}
  for b in range(len(edges) - 1):
    m = idx == b
    if m.any():
      out["mean_predicted"].append(float(p[m].mean()))
      out["observed"].append(float(y[m].mean()))
      out["count"].append(int(m.sum()))
      out["bin_lower"].append(float(edges[b]))
      out["bin_upper"].append(float(edges[b + 1]))
  # A histogram of the predictions (20 equal-width bins) for the plot under the curve.
  counts, edges = np.histogram(p, bins=20, range=(0.0, 1.0))
  out["histogram"] = {"edges": edges.tolist(), "counts": counts.tolist()}
  return out


def expected_calibration_error(curve: dict[str, Any]) -> float:
  """Count-weighted mean |observed - predicted| over the bins of `calibration_curve`."""
  c = np.asarray(curve["count"], np.float64)
  if not c.sum():
    return math.nan
  gap = np.abs(np.asarray(curve["observed"]) - np.asarray(curve["mean_predicted"]))
  return float((gap * c).sum() / c.sum())


def decision_curve(y: np.ndarray, p: np.ndarray,
                   grid: np.ndarray = DCA_GRID) -> dict[str, list[float]]:
  """Net benefit of the model, treat-all and treat-none at each threshold probability."""
  y = np.asarray(y) > 0.5
  p = np.asarray(p, np.float64)
  n = max(len(y), 1)
  prev = float(y.mean()) if len(y) else math.nan
  odds = grid / (1.0 - grid)
  pred = p[None, :] >= grid[:, None]
  tp = (pred & y[None, :]).sum(1) / n
  fp = (pred & ~y[None, :]).sum(1) / n
  return {
      "threshold": grid.tolist(),
      "model": (tp - fp * odds).tolist(),
      "treat_all": (prev - (1.0 - prev) * odds).tolist(),
      "treat_none": [0.0] * len(grid),
  }


def label_report(y: np.ndarray, p: np.ndarray, rule: ThresholdRule, *, n_bins: int = 10,
                 strategy: str = "quantile") -> dict[str, Any]:
  """Operating point, Brier score, calibration curve (+ ECE) and decision curve of one label."""
  keep = np.isfinite(np.asarray(p, np.float64))
  y, p = np.asarray(y)[keep], np.asarray(p, np.float64)[keep]
  thr = choose_threshold(y, p, rule)
  curve = calibration_curve(y, p, n_bins=n_bins, strategy=strategy)
  return {
      "operating_point": operating_point(y, p, thr),
      "brier": brier(y, p),
      "ece": expected_calibration_error(curve),
      "calibration": curve,
      "decision_curve": decision_curve(y, p),
  }
