"""Ranking metrics for multi-label probes: AUROC, AUPRC, per label and macro.

A label whose test split holds a single class has no defined AUROC/AUPRC: it gets NaN
and a `SingleClassWarning` (never an exception), and macro means skip it and say how
many labels they skipped, so one rare label cannot sink a whole evaluation run.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any
import warnings

import numpy as np

from ecgjax import lazy

skm = lazy.LazyModule("sklearn.metrics")  # on first use: the trainer imports this module


class SingleClassWarning(UserWarning):
  """A metric was asked of labels that hold one class only; it is NaN."""


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  y = np.asarray(y)
  p = np.asarray(p, dtype=np.float64)
  if y.shape != p.shape:
    raise ValueError(f"labels {y.shape} and scores {p.shape} differ in shape")
  if y.ndim != 1:
    raise ValueError(f"expected 1-D labels and scores for one label, got {y.shape}")
  if not np.all(np.isfinite(p)):
    raise ValueError(f"{int(np.sum(~np.isfinite(p)))} scores are NaN or infinite")
  return (y > 0.5).astype(np.int64), p


def _single_class(y: np.ndarray, metric: str, name: str | None) -> bool:
  if y.size and 0 < y.sum() < y.size:
    return False
  what = f"label {name!r}" if name is not None else "the labels"
  kind = "positive" if y.sum() == 0 else "negative"
  warnings.warn(f"{metric} undefined: {what} has no {kind} examples among {y.size}; "
                "reporting NaN and leaving it out of macro means",
                SingleClassWarning, stacklevel=3)
  return True


def auroc(y: np.ndarray, p: np.ndarray, *, name: str | None = None) -> float:
  """Area under the ROC curve of scores `p` for binary labels `y`; NaN (warned) if one class."""
  y, p = _check(y, p)
  if _single_class(y, "AUROC", name):
    return math.nan
  return float(skm.roc_auc_score(y, p))


def auprc(y: np.ndarray, p: np.ndarray, *, name: str | None = None) -> float:
  """Average precision (sklearn's step-wise AUPRC); NaN (warned) if `y` holds one class."""
  y, p = _check(y, p)
  if _single_class(y, "AUPRC", name):
    return math.nan
  return float(skm.average_precision_score(y, p))


def _nanmean(values: list[float]) -> float:
  kept = [v for v in values if not math.isnan(v)]
  return float(np.mean(kept)) if kept else math.nan


def summarize(y: np.ndarray, p: np.ndarray, label_names: Sequence[str]) -> dict[str, Any]:
  """Per-label AUROC/AUPRC/n_pos and their macro means over labels where they are defined.

  Returns {"macro_auroc", "macro_auprc", "per_label": {name: {"auroc", "auprc", "n_pos"}},
  "n_excluded", "excluded": [names]}; y and p are (N, L).
  """
  y, p = np.asarray(y), np.asarray(p)
  names = [str(n) for n in label_names]
  if y.ndim != 2 or y.shape != p.shape or y.shape[1] != len(names):
    raise ValueError(f"labels {y.shape}, scores {p.shape} and {len(names)} label names "
                     "do not agree (expected (N, L), (N, L) and L)")
  per_label: dict[str, dict[str, Any]] = {}
  for j, name in enumerate(names):
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", SingleClassWarning)
      a = auroc(y[:, j], p[:, j], name=name)
      pr = auprc(y[:, j], p[:, j], name=name)
    if caught:  # one warning per label is enough; both metrics say the same thing
      warnings.warn(str(caught[0].message), SingleClassWarning, stacklevel=2)
    per_label[name] = {"auroc": a, "auprc": pr, "n_pos": int((y[:, j] > 0.5).sum())}
  excluded = [n for n, m in per_label.items() if math.isnan(m["auroc"])]
  return {
      "macro_auroc": _nanmean([m["auroc"] for m in per_label.values()]),
      "macro_auprc": _nanmean([m["auprc"] for m in per_label.values()]),
      "per_label": per_label,
      "n_excluded": len(excluded),
      "excluded": excluded,
  }


def format_table(summary: dict[str, Any], *, title: str | None = None) -> str:
  """A fixed-width text table of a `summarize` result, macro row last."""
  rows = summary["per_label"]
  width = max([len("label"), len("macro")] + [len(n) for n in rows])
  fmt = lambda v: "   nan" if math.isnan(v) else f"{v:6.3f}"
  lines = [title] if title else []
  lines.append(f"{'label':<{width}}  {'AUROC':>6}  {'AUPRC':>6}  {'n_pos':>6}")
  lines.append("-" * (width + 24))
  for name, m in rows.items():
    lines.append(f"{name:<{width}}  {fmt(m['auroc'])}  {fmt(m['auprc'])}  {m['n_pos']:>6d}")
  lines.append("-" * (width + 24))
  lines.append(f"{'macro':<{width}}  {fmt(summary['macro_auroc'])}  "
               f"{fmt(summary['macro_auprc'])}")
  if summary["n_excluded"]:
    lines.append(f"({summary['n_excluded']} label(s) with a single class in the test split "
                 f"left out of the macro means: {', '.join(summary['excluded'])})")
  return "\n".join(lines)
