"""What clinical ECG-AI papers report beyond AUROC: risk strata, rank correlation, regression.

- Risk strata (the CCTA study's low / intermediate / high risk groups): fixed probability cut
  points per label, `--strata LAD=0.15,LM=0.01` (one cut, two strata) or `LAD=0.05/0.15` (two
  cuts, three strata); per stratum the count, the events and the observed event rate with its
  Wilson score 95% interval (exact enough at the small counts of a high-risk stratum, never
  outside [0, 1], and not zero-width at 0 events, unlike the Wald interval).
- Spearman's rank correlation of a predicted probability with an ordinal column (stenosis
  grade), with a bootstrap interval.
- Regression targets: MAE, RMSE, R^2, Pearson and Spearman, each with a bootstrap interval.

Bootstrap intervals use the report's resample weights (records, or patients with their records
together: `bootstrap.resample_weights`): a weighted statistic under integer weights equals the
statistic on the records duplicated that many times, so the intervals are those of resampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import math
from typing import Any

import numpy as np

from ecgjax.errors import UserError
from ecgjax.eval import bootstrap


class StrataError(UserError, ValueError):
  """A --strata specification that cannot be used (names the label or value)."""


def wilson_ci(k: float, n: float, level: float = 0.95) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion k / n ((NaN, NaN) when n = 0)."""
  if n <= 0:
    return (math.nan, math.nan)
  from scipy import stats  # pylint: disable=g-import-not-at-top
  z = float(stats.norm.ppf(1 - (1 - level) / 2))
  p = k / n
  mid = (p + z * z / (2 * n)) / (1 + z * z / n)
  half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
  return (max(0.0, mid - half), min(1.0, mid + half))


def parse_strata(text: str, label_names: Sequence[str]) -> dict[str, list[float]]:
  """"LAD=0.15,LM=0.01" or "LAD=0.05/0.15" -> {label: increasing cut points in (0, 1)}."""
  out: dict[str, list[float]] = {}
  for part in (t.strip() for t in str(text).split(",")):
    if not part:
      continue
    if "=" not in part:
      raise StrataError(f"--strata: {part!r} must be LABEL=CUT[/CUT...], e.g. LAD=0.15")
    label, cuts = (s.strip() for s in part.split("=", 1))
    if label not in label_names:
      raise StrataError(f"--strata: unknown label {label!r}; the predictions have "
                        f"{list(label_names)}")
    try:
      values = [float(c) for c in cuts.split("/")]
    except ValueError:
      raise StrataError(f"--strata: {label}={cuts!r}: cut points must be numbers") from None
    if any(not 0 < v < 1 for v in values) or values != sorted(set(values)):
      raise StrataError(f"--strata: {label}={cuts}: cut points must be increasing "
                        "probabilities strictly between 0 and 1")
    out[label] = values
  return out


def risk_strata(y: np.ndarray, p: np.ndarray, cuts: Sequence[float]) -> list[dict[str, Any]]:
  """Per stratum [lo, hi) of the predicted probability (the last one closed): n, events,
  observed event rate and its Wilson 95% interval, and the stratum's share of the records."""
  keep = np.isfinite(p)
  y, p = np.asarray(y)[keep] > 0.5, np.asarray(p)[keep]
  edges = [0.0, *cuts, 1.0]
  which = np.searchsorted(np.asarray(cuts), p, side="right")  # p == cut: the upper stratum
  out = []
  for s in range(len(edges) - 1):
    rows = which == s
    n, k = int(rows.sum()), int(y[rows].sum())
    out.append({"stratum": s, "range": [edges[s], edges[s + 1]], "n": n, "events": k,
                "event_rate": k / n if n else math.nan, "event_rate_ci": list(wilson_ci(k, n)),
                "share": n / max(int(keep.sum()), 1)})
  return out


def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """(B, n) mid-ranks of x under each weight row, as ranks of the duplicated records: a tie
  group of weight W after C lower-ranked copies gets rank C + (W + 1) / 2."""
  order = np.argsort(x, kind="mergesort")
  xs = x[order]
  starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
  group = np.cumsum(np.r_[True, xs[1:] != xs[:-1]]) - 1
  ws = w[:, order]
  gw = np.add.reduceat(ws, starts, axis=1)  # (B, G)
  below = np.cumsum(gw, axis=1) - gw
  ranks_sorted = (below + (gw + 1) / 2)[:, group]
  out = np.empty_like(ranks_sorted)
  out[:, order] = ranks_sorted
  return out


def _weighted_pearson(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
  """(B,) Pearson correlation of a and b ((B, n) or (n,)) under weight rows w (B, n)."""
  sw = w.sum(1, keepdims=True)
  ma, mb = (w * a).sum(1, keepdims=True) / sw, (w * b).sum(1, keepdims=True) / sw
  cov = (w * (a - ma) * (b - mb)).sum(1)
  va, vb = (w * (a - ma) ** 2).sum(1), (w * (b - mb) ** 2).sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where((va > 0) & (vb > 0), cov / np.sqrt(va * vb), np.nan)


def weighted_spearman(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
  """(B,) Spearman's rho of x and y under weight rows w (B, n) (ties: mid-ranks)."""
  w = np.atleast_2d(np.asarray(w, np.float64))
  return _weighted_pearson(_weighted_ranks(np.asarray(x, np.float64), w),
                           _weighted_ranks(np.asarray(y, np.float64), w), w)


def _with_ci(values: np.ndarray) -> tuple[float, list[float]]:
  """Row 0 is the point estimate, the rest the resamples."""
  return float(values[0]), list(bootstrap.percentile_ci(values[1:]))


def _stack(weights: np.ndarray, rec_idx: np.ndarray) -> np.ndarray:
  """(1 + B, rows) weights: every row once, then each resample's weights of the rows."""
  return np.vstack([np.ones((1, rec_idx.size)), weights[:, rec_idx]]).astype(np.float64)


def spearman(p: np.ndarray, ordinal: np.ndarray, rec_idx: np.ndarray,
             weights: np.ndarray) -> dict[str, Any]:
  """Spearman's rho of predicted probability p with an ordinal column, with a 95% CI."""
  keep = np.isfinite(p) & np.isfinite(ordinal)
  w = _stack(weights, rec_idx[keep])
  rho, ci = _with_ci(weighted_spearman(p[keep], ordinal[keep], w))
  return {"rho": rho, "rho_ci": ci, "n": int(keep.sum())}


def regression_scores(y: np.ndarray, yhat: np.ndarray, rec_idx: np.ndarray,
                      weights: np.ndarray) -> dict[str, Any]:
  """MAE, RMSE, R^2 (1 - SSE / SST about the truth's mean), Pearson r and Spearman rho of one
  target, each with its 95% bootstrap interval; rows without a prediction are left out."""
  keep = np.isfinite(y) & np.isfinite(yhat)
  y, yhat = np.asarray(y, np.float64)[keep], np.asarray(yhat, np.float64)[keep]
  w = _stack(weights, rec_idx[keep])
  sw = w.sum(1)
  err = yhat - y
  mae = (w * np.abs(err)).sum(1) / sw
  mse = (w * err ** 2).sum(1) / sw
  mean = (w * y).sum(1, keepdims=True) / sw[:, None]
  sst = (w * (y - mean) ** 2).sum(1)
  with np.errstate(invalid="ignore", divide="ignore"):
    r2 = np.where(sst > 0, 1 - (w * err ** 2).sum(1) / sst, np.nan)
  out: dict[str, Any] = {"n": int(keep.sum())}
  for name, v in (("mae", mae), ("rmse", np.sqrt(mse)), ("r2", r2),
                  ("pearson", _weighted_pearson(y, yhat, w)),
                  ("spearman", weighted_spearman(y, yhat, w))):
    out[name], out[f"{name}_ci"] = _with_ci(v)
  return out


def strata_report(y: np.ndarray, p: np.ndarray, label_names: Sequence[str],
                  strata: Mapping[str, Sequence[float]]) -> dict[str, list[dict[str, Any]]]:
  """{label: risk_strata(...)} for the labels given cut points."""
  return {l: risk_strata(y[:, label_names.index(l)], p[:, label_names.index(l)], cuts)
          for l, cuts in strata.items()}
