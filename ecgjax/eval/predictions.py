"""Prediction tables: what a probe (or any other model) predicted for each scored record.

CSV columns: `record_id`, `patient_id`, `fold`, then per label `y_<label>` (0/1 truth) and
`p_<label>` (probability; empty = not predicted). Optional `repeat` (which repeat of a
repeated protocol produced the row; a record appears once per repeat) and `cv_fold` (the
cross-validation fold that scored it). Tables from other tools need only the required
columns; every row is then one repeat-0 prediction. Regression tables (task "regression")
have `target_<name>` (the true value) and `pred_<name>` (the estimate) pairs instead. Other
columns (a stenosis grade, an age) are kept as they are and can be read with `column`.
"""

from __future__ import annotations

from collections.abc import Sequence
import csv
import dataclasses
import math
import os

import numpy as np
from ecgjax.errors import UserError

REQUIRED = ("record_id", "patient_id", "fold")
OPTIONAL = ("repeat", "cv_fold")


class PredictionsError(UserError, ValueError):
  """A predictions table that cannot be read or evaluated; says which column/row."""


@dataclasses.dataclass
class Predictions:
  """Scored rows: ids (R,), truth y and probabilities p (R, L) (NaN = not predicted)."""
  record_id: np.ndarray
  patient_id: np.ndarray
  fold: np.ndarray
  repeat: np.ndarray
  cv_fold: np.ndarray
  y: np.ndarray
  p: np.ndarray
  label_names: tuple[str, ...]
  task: str = "classification"  # or "regression": y holds targets, p estimates

  def __post_init__(self):
    n, n_labels = len(self.record_id), len(self.label_names)
    for k in ("patient_id", "fold", "repeat", "cv_fold"):
      if len(getattr(self, k)) != n:
        raise PredictionsError(f"{k} has {len(getattr(self, k))} rows, record_id {n}")
    if self.y.shape != (n, n_labels) or self.p.shape != (n, n_labels):
      raise PredictionsError(f"y {self.y.shape} and p {self.p.shape} must be ({n}, {n_labels})")

  @property
  def repeats(self) -> list[np.ndarray]:
    """Row indices of each repeat, in repeat order."""
    return [np.flatnonzero(self.repeat == r) for r in np.unique(self.repeat)]

  def select(self, labels: Sequence[str]) -> "Predictions":
    """The same rows restricted to `labels` (in that order)."""
    missing = [l for l in labels if l not in self.label_names]
    if missing:
      raise PredictionsError(f"labels {missing} not in the table (it has "
                             f"{list(self.label_names)})")
    idx = [self.label_names.index(l) for l in labels]
    return dataclasses.replace(self, y=self.y[:, idx], p=self.p[:, idx],
                               label_names=tuple(labels))

  @property
  def columns(self) -> tuple[str, str]:
    """The CSV prefixes of truth and prediction: (y_, p_) or, for regression, (target_, pred_)."""
    return ("target_", "pred_") if self.task == "regression" else ("y_", "p_")


def concat(parts: Sequence[Predictions]) -> Predictions:
  """Rows of several tables with the same labels, stacked."""
  if not parts:
    raise PredictionsError("no predictions to concatenate")
  cat = lambda k: np.concatenate([getattr(p, k) for p in parts])
  return Predictions(cat("record_id"), cat("patient_id"), cat("fold"), cat("repeat"),
                     cat("cv_fold"), cat("y"), cat("p"), parts[0].label_names, parts[0].task)


def write_csv(path: str, pred: Predictions) -> str:
  """Writes the table as CSV (probabilities with 6 decimals); returns the path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  header = list(REQUIRED) + list(OPTIONAL)
  yc, pc = pred.columns
  header += [f"{yc}{l}" for l in pred.label_names] + [f"{pc}{l}" for l in pred.label_names]
  regression = pred.task == "regression"
  num = (lambda v: "" if math.isnan(v) else f"{v:.7g}") if regression else (
      lambda v: "" if math.isnan(v) else f"{v:.6f}")
  with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    for i in range(len(pred.record_id)):
      ys = [num(v) for v in pred.y[i].tolist()] if regression else [
          int(v > 0.5) for v in pred.y[i]]
      w.writerow([pred.record_id[i], pred.patient_id[i], int(pred.fold[i]),
                  int(pred.repeat[i]), int(pred.cv_fold[i])]
                 + ys + [num(v) for v in pred.p[i].tolist()])
  return path


def _number(text: str, path: str, row: int, col: str, *, allow_empty: bool) -> float:
  t = text.strip()
  if not t and allow_empty:
    return math.nan
  try:
    return float(t)
  except ValueError:
    raise PredictionsError(f"{path} row {row}: column {col!r} holds {text!r}, not a "
                           "number") from None


def read_csv(path: str) -> Predictions:
  """Reads a predictions CSV; errors name the missing column or the bad row."""
  if not os.path.isfile(path):
    raise PredictionsError(f"no such predictions file: {path}")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise PredictionsError(f"{path} is empty")
  header = [h.strip() for h in rows[0]]
  col = {h: j for j, h in enumerate(header)}
  missing = [c for c in REQUIRED if c not in col]
  if missing:
    raise PredictionsError(f"{path} lacks required column(s) {missing} (has {header})")
  ys = [h[2:] for h in header if h.startswith("y_")]
  ps = [h[2:] for h in header if h.startswith("p_")]
  ts = [h[7:] for h in header if h.startswith("target_")]
  es = [h[5:] for h in header if h.startswith("pred_")]
  if (ys or ps) and (ts or es):
    raise PredictionsError(f"{path} mixes classification (y_/p_) and regression "
                           "(target_/pred_) columns; evaluate them as two tables")
  regression = bool(ts or es)
  if regression:
    ys, ps, yc, pc = ts, es, "target_", "pred_"
  else:
    yc, pc = "y_", "p_"
  if not ys:
    raise PredictionsError(f"{path} has no label columns: expected y_<label> and "
                           "p_<label> pairs (or target_<name> and pred_<name> for regression)")
  unpaired = sorted(set(ys) ^ set(ps))
  if unpaired:
    raise PredictionsError(f"{path}: label(s) {unpaired} lack a {yc} or {pc} column (each "
                           "needs both)")
  body = [r for r in rows[1:] if any(c.strip() for c in r)]
  if not body:
    raise PredictionsError(f"{path} has a header but no rows")
  for i, r in enumerate(body, start=2):
    if len(r) != len(header):
      raise PredictionsError(f"{path} row {i} has {len(r)} fields, the header {len(header)}")
  get = lambda c: [r[col[c]].strip() for r in body]
  num = lambda c, empty: np.array([_number(r[col[c]], path, i, c, allow_empty=empty)
                                   for i, r in enumerate(body, start=2)])
  y = np.stack([num(f"{yc}{l}", regression) for l in ys], 1)
  bad = np.zeros_like(y, bool) if regression else ~np.isin(y, (0.0, 1.0))
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise PredictionsError(f"{path} row {i + 2}: y_{ys[j]} = {y[i, j]:g}; truth must be 0 or 1")
  p = np.stack([num(f"{pc}{l}", True) for l in ys], 1)
  finite = p[np.isfinite(p)]
  if not regression and finite.size and (finite.min() < 0 or finite.max() > 1):
    raise PredictionsError(f"{path}: probabilities must lie in [0, 1] (found "
                           f"{finite.min():g} .. {finite.max():g})")
  n = len(body)
  opt = lambda c: (num(c, False).astype(np.int64) if c in col else np.zeros(n, np.int64))
  return Predictions(np.array(get("record_id")), np.array(get("patient_id")),
                     num("fold", False).astype(np.int64), opt("repeat"), opt("cv_fold"),
                     y.astype(np.float64 if regression else np.float32), p.astype(np.float64),
                     tuple(ys), "regression" if regression else "classification")


def column(path: str, name: str, record_id: np.ndarray) -> np.ndarray:
  """Numeric column `name` of a CSV with a record_id column, in the order of `record_id`
  (NaN where a record has no row or an empty cell): an ordinal grade beside predictions."""
  if not os.path.isfile(path):
    raise PredictionsError(f"no such file: {path}")
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  header = [h.strip() for h in rows[0]] if rows else []
  for c in ("record_id", name):
    if c not in header:
      raise PredictionsError(f"{path} has no column {c!r} (has {header})")
  ri, ci = header.index("record_id"), header.index(name)
  values: dict[str, float] = {}
  for i, r in enumerate(rows[1:], start=2):
    if len(r) == len(header):
      values[r[ri].strip()] = _number(r[ci], path, i, name, allow_empty=True)
  return np.array([values.get(str(rid), math.nan) for rid in record_id], np.float64)
