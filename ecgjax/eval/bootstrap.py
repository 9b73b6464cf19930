"""Percentile-bootstrap confidence intervals of AUROC and AUPRC, vectorised over resamples.

A resample draws records with replacement; a record drawn k times counts k times. Instead
of re-sorting every resample, each resample is a row of integer weights over the records
and the weighted AUROC / average precision are computed for all rows at once from one
sort (they equal sklearn's `roc_auc_score` / `average_precision_score` on the duplicated
records). 1000 resamples of a few thousand records take milliseconds per label.

Repeated protocols (K-fold CV under several seeds, reshuffled splits) score the same
records several times. The unit of resampling stays the record: one draw of record
weights per resample is shared by every repeat, each repeat's metric is computed on its
own rows with those weights, and the statistic is the mean over repeats, so the interval
is that of the repeat-averaged estimate and accounts for repeats sharing records.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

import numpy as np

# Resamples evaluated per chunk: bounds memory at about CHUNK_ELEMENTS floats per array.
CHUNK_ELEMENTS = 4_000_000


def _grouped(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Order of `p` ascending and the start of each run of tied values in that order."""
  order = np.argsort(p, kind="mergesort")
  ps = p[order]
  starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
  return order, starts


def weighted_auroc_auprc(y: np.ndarray, p: np.ndarray, w: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray]:
  """AUROC and average precision of scores p (n,) for labels y (n,) under weights w (B, n).

  Ties count one half (AUROC) and form one threshold (AP), as in sklearn. A row whose
  weights leave a single class gives NaN for both.
  """
  y = np.asarray(y) > 0.5
  w = np.atleast_2d(np.asarray(w, np.float64))
  order, starts = _grouped(np.asarray(p, np.float64))
  ys, ws = y[order], w[:, order]
  pos = np.add.reduceat(ws * ys, starts, axis=1)  # (B, K) positive weight per tie group
  neg = np.add.reduceat(ws * ~ys, starts, axis=1)
  n_pos, n_neg = pos.sum(1), neg.sum(1)
  ok = (n_pos > 0) & (n_neg > 0)
  with np.errstate(invalid="ignore", divide="ignore"):
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each group
    auc = (pos * (below + 0.5 * neg)).sum(1) / (n_pos * n_neg)
    # Average precision walks thresholds from the highest score down.
    tp = np.cumsum(pos[:, ::-1], axis=1)
    fp = np.cumsum(neg[:, ::-1], axis=1)
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
    ap = (pos[:, ::-1] * precision).sum(1) / n_pos
  return np.where(ok, auc, np.nan), np.where(ok, ap, np.nan)


@dataclasses.dataclass
class RankingBootstrap:
  """Point estimates, 95% intervals and per-resample values of AUROC/AUPRC for one label."""
  auroc: float
  auprc: float
  auroc_ci: tuple[float, float]
  auprc_ci: tuple[float, float]
  auroc_samples: np.ndarray  # (B,) NaN where skipped
  auprc_samples: np.ndarray
  n_skipped: int  # resamples left out because some repeat held a single class
  n_undefined_repeats: int = 0  # repeats whose test rows hold one class (left out)


def record_weights(n_records: int, n_resamples: int, seed: int) -> np.ndarray:
  """(B, n) multinomial draw counts: each row is one resample of the records."""
  rng = np.random.default_rng(np.random.SeedSequence([seed, 0xB007]))
  return rng.multinomial(n_records, np.full(n_records, 1.0 / n_records),
                         size=n_resamples).astype(np.float32)


def cluster_weights(cluster: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
  """(B, n) record weights of a cluster (patient) bootstrap: each resample draws the clusters
  with replacement and a record weighs as many times as its cluster was drawn, so records of
  one patient move together (their correlation widens the interval, as it should).
  cluster: (n,) integer cluster index of each record, 0..K-1."""
  cluster = np.asarray(cluster, np.int64)
  k = int(cluster.max()) + 1 if cluster.size else 0
  return record_weights(k, n_resamples, seed)[:, cluster]


def resample_weights(patient_of_record: np.ndarray, n_resamples: int, seed: int,
                     unit: str = "auto") -> tuple[np.ndarray, str]:
  """(B, n_records) weights and the unit used: "patient" (`cluster_weights`), "record", or
  "auto" = patient when any patient has more than one record."""
  if unit not in ("auto", "patient", "record"):
    raise ValueError(f"bootstrap unit must be auto, patient or record, got {unit!r}")
  patients, cluster = np.unique(np.asarray(patient_of_record).astype(str), return_inverse=True)
  if unit == "auto":
    unit = "patient" if len(patients) < len(cluster) else "record"
  if unit == "patient":
    return cluster_weights(cluster, n_resamples, seed), unit
  return record_weights(len(cluster), n_resamples, seed), unit


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  """Percentile interval of the finite samples; (NaN, NaN) when none."""
  s = np.asarray(samples, np.float64)
  s = s[np.isfinite(s)]
  if not s.size:
    return (float("nan"), float("nan"))
  lo, hi = np.quantile(s, [(1 - level) / 2, 1 - (1 - level) / 2])
  return (float(lo), float(hi))


def bootstrap_label(y: np.ndarray, p: np.ndarray, record: np.ndarray,
                    repeats: Sequence[np.ndarray], weights: np.ndarray,
                    level: float = 0.95) -> RankingBootstrap:
  """Bootstrap of one label's repeat-averaged AUROC/AUPRC.

  y, p: (rows,) labels and scores (NaN scores are left out); record: (rows,) index of
  each row's record into the columns of `weights` (B, n_records); repeats: row-index
  arrays, one per repeat. The point estimate uses unit weights.
  """
  y, p = np.asarray(y), np.asarray(p, np.float64)
  n_b = weights.shape[0]
  aucs = np.zeros((len(repeats), n_b + 1))
  aps = np.zeros((len(repeats), n_b + 1))
  for r, rows in enumerate(repeats):
    rows = rows[np.isfinite(p[rows])]
    if not rows.size:
      aucs[r], aps[r] = np.nan, np.nan
      continue
    chunk = max(1, CHUNK_ELEMENTS // rows.size)
    for start in range(0, n_b + 1, chunk):
      stop = min(start + chunk, n_b + 1)
      # Row 0 of the stack is the point estimate (every record once).
      idx = np.arange(start, stop)
      w = np.ones((idx.size, rows.size), np.float32)
      boot = idx > 0
      w[boot] = weights[idx[boot] - 1][:, record[rows]]
      aucs[r, start:stop], aps[r, start:stop] = weighted_auroc_auprc(y[rows], p[rows], w)
  # A repeat whose own test rows hold one class has no value and is left out; within the
  # others, a resample that leaves a single class in any of them is skipped (and counted).
  defined = np.isfinite(aucs[:, 0])
  if not defined.any():
    nan = float("nan")
    return RankingBootstrap(nan, nan, (nan, nan), (nan, nan), np.full(n_b, np.nan),
                            np.full(n_b, np.nan), n_b, len(repeats))
  auc, ap = aucs[defined].mean(0), aps[defined].mean(0)
  skipped = int(np.sum(~np.isfinite(auc[1:])))
  return RankingBootstrap(
      auroc=float(auc[0]), auprc=float(ap[0]),
      auroc_ci=percentile_ci(auc[1:], level), auprc_ci=percentile_ci(ap[1:], level),
      auroc_samples=auc[1:], auprc_samples=ap[1:], n_skipped=skipped,
      n_undefined_repeats=int((~defined).sum()))


# Grids the curve bands are drawn on.
CURVE_GRID: np.ndarray = np.linspace(0.0, 1.0, 101)


def weighted_curves(y: np.ndarray, p: np.ndarray, w: np.ndarray,
                    grid: np.ndarray = CURVE_GRID) -> tuple[np.ndarray, np.ndarray]:
  """TPR at FPR = grid and interpolated precision at recall = grid, per weight row (B, G).

  Interpolated precision at recall r is the best precision at any recall >= r (the usual
  PR-curve envelope). Rows with a single class are NaN.
  """
  y = np.asarray(y) > 0.5
  w = np.atleast_2d(np.asarray(w, np.float64))
  order, starts = _grouped(-np.asarray(p, np.float64))  # descending scores
  ys, ws = y[order], w[:, order]
  tp = np.cumsum(np.add.reduceat(ws * ys, starts, axis=1), axis=1)
  fp = np.cumsum(np.add.reduceat(ws * ~ys, starts, axis=1), axis=1)
  n_pos, n_neg = tp[:, -1], fp[:, -1]
  tpr_out = np.full((w.shape[0], grid.size), np.nan)
  prec_out = np.full((w.shape[0], grid.size), np.nan)
  for b in np.flatnonzero((n_pos > 0) & (n_neg > 0)):
    tpr = np.r_[0.0, tp[b] / n_pos[b]]
    fpr = np.r_[0.0, fp[b] / n_neg[b]]
    # np.interp wants increasing x; vertical ROC segments: take the highest TPR at each FPR.
    ufpr, last = np.unique(fpr[::-1], return_index=True)
    tpr_out[b] = np.interp(grid, ufpr, tpr[::-1][last])
    rec = tp[b] / n_pos[b]
    with np.errstate(invalid="ignore", divide="ignore"):
      prec = np.where(tp[b] + fp[b] > 0, tp[b] / (tp[b] + fp[b]), 1.0)
    envelope = np.maximum.accumulate(prec[::-1])[::-1]
    idx = np.searchsorted(rec, grid, side="left")
    prec_out[b] = np.where(idx < rec.size, envelope[np.minimum(idx, rec.size - 1)], np.nan)
  return tpr_out, prec_out
