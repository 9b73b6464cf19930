"""Runs a probe over the splits of a protocol: predictions tables and label-efficiency curves.

The record table (ids, patients, folds, labels) and the feature blocks (one per embedding
source, rows aligned to the table) are fixed; each split fuses the blocks with min-max
statistics of its own training rows (`fusion.fuse`), fits the probe there and predicts its
test rows. Nothing of a test side ever reaches the fit, the scaler or the min-max.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import time
from typing import Any

from absl import logging
import numpy as np

from ecgjax.eval import fusion, probes, protocols
from ecgjax.eval import predictions as pred_lib
from ecgjax.eval import report as report_lib


@dataclasses.dataclass
class Table:
  """The records under evaluation: ids (N,), folds (N,), labels (N, L) and label names."""
  record_id: np.ndarray
  patient_id: np.ndarray
  fold: np.ndarray
  labels: np.ndarray
  label_names: tuple[str, ...]

  def __len__(self) -> int:
    return len(self.record_id)

  def subset(self, rows: np.ndarray) -> "Table":
    """The table restricted to `rows`."""
    return Table(self.record_id[rows], self.patient_id[rows], self.fold[rows],
                 self.labels[rows], self.label_names)

  def select_labels(self, names: Sequence[str]) -> "Table":
    """The table with only the labels `names` (a binary task when one)."""
    missing = [n for n in names if n not in self.label_names]
    if missing:
      raise ValueError(f"unknown label(s) {missing}; the data has "
                       f"{', '.join(self.label_names)}")
    idx = [self.label_names.index(n) for n in names]
    return dataclasses.replace(self, labels=self.labels[:, idx], label_names=tuple(names))


def run_probe(table: Table, blocks: Sequence[np.ndarray], splits: Sequence[protocols.Split],
              *, probe: str = "logreg", on_single_class: str = "nan",
              split_name: str = "the training split", log: bool = True
              ) -> pred_lib.Predictions:
  """Fits `probe` on each split's training rows and predicts its test rows (stacked)."""
  fit_predict = probes.get_probe(probe)
  parts = []
  for sp in splits:
    t0 = time.perf_counter()
    x_train, x_test = fusion.fuse(blocks, sp.train, sp.test)
    name = split_name if len(splits) == 1 else (
        f"the training side of repeat {sp.repeat} fold {sp.cv_fold}")
    p = fit_predict(x_train, table.labels[sp.train], x_test, seed=sp.seed,
                    label_names=table.label_names, split=name,
                    on_single_class=on_single_class, groups=table.patient_id[sp.train])
    if log:
      logging.info("repeat %d fold %d: %d train / %d test records, %s fitted in %.1fs",
                   sp.repeat, sp.cv_fold, sp.train.size, sp.test.size, probe,
                   time.perf_counter() - t0)
    t = sp.test
    parts.append(pred_lib.Predictions(
        table.record_id[t], table.patient_id[t], table.fold[t],
        np.full(t.size, sp.repeat, np.int64), np.full(t.size, sp.cv_fold, np.int64),
        table.labels[t].astype(np.float32), p.astype(np.float64), table.label_names))
  return pred_lib.concat(parts)


def run_metrics(pred: pred_lib.Predictions) -> tuple[list[float], list[float], dict[str, float]]:
  """Macro AUROC and AUPRC of each repeat, and each label's AUROC averaged over repeats."""
  macro_auroc, macro_auprc = [], []
  per_label: dict[str, list[float]] = {l: [] for l in pred.label_names}
  for rows in pred.repeats:
    a_s, p_s = [], []
    for j, l in enumerate(pred.label_names):
      a, ap = report_lib.unit_scores(pred.y[rows, j], pred.p[rows, j])
      per_label[l].append(a)
      a_s.append(a)
      p_s.append(ap)
    macro_auroc.append(report_lib.nanmean(a_s))
    macro_auprc.append(report_lib.nanmean(p_s))
  return macro_auroc, macro_auprc, {
      l: report_lib.nanmean(v) for l, v in per_label.items()}


def label_efficiency(table: Table, blocks: Sequence[np.ndarray],
                     splits: Sequence[protocols.Split], sizes: Sequence[int | None], *,
                     probe: str = "logreg",
                     min_positives: int = protocols.MIN_POSITIVES) -> list[dict[str, Any]]:
  """Per training size: the probe on cut-down training sides of every split.

  Each point: train_size ("all" or the count asked), n_train (mean actual), n_runs
  (repeats: seeds x repeats; a CV run pools its folds), macro AUROC/AUPRC per run with mean
  and sample std, and per-label AUROC means.
  """
  # Sizes reaching every training side are "all": compute that point once.
  biggest = max(sp.train.size for sp in splits)
  norm: list[int | None] = []
  for s in sizes:
    s = None if s is None or s >= biggest else s
    if s not in norm:
      norm.append(s)
  out = []
  for size in norm:
    cut = [sp for _, sp in protocols.iter_label_efficiency(splits, table.labels, [size],
                                                           min_positives=min_positives)]
    t0 = time.perf_counter()
    pred = run_probe(table, blocks, cut, probe=probe, on_single_class="nan", log=False)
    auroc, auprc, per_label = run_metrics(pred)
    a_mean, a_std = report_lib.mean_std(auroc)
    p_mean, p_std = report_lib.mean_std(auprc)
    n_train = float(np.mean([sp.train.size for sp in cut]))
    logging.info("label efficiency: %s training records (mean %.0f): macro AUROC %.3f "
                 "(%d runs, %.1fs)", "all" if size is None else size, n_train, a_mean,
                 len(auroc), time.perf_counter() - t0)
    out.append({
        "train_size": "all" if size is None else int(size), "n_train": n_train,
        "n_runs": len(auroc), "macro_auroc_mean": a_mean, "macro_auroc_std": a_std,
        "macro_auroc_runs": auroc, "macro_auprc_mean": p_mean, "macro_auprc_std": p_std,
        "macro_auprc_runs": auprc, "per_label_auroc": per_label,
    })
  return out
