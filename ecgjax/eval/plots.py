"""PNG figures of a report: ROC/PR, calibration, decision curves, label efficiency, t-SNE.

Every figure is drawn from the numbers in the report dict (so report.json reproduces it),
except the t-SNE, which needs the embeddings: up to 500 records (balanced per class for a
binary task, a seeded random sample otherwise), z-scored, sklearn TSNE with a fixed seed.
"""

from __future__ import annotations

import os
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
import threadpoolctl  # pylint: disable=g-import-not-at-top,wrong-import-position

# Above this many labels, curves are drawn without bands (they would hide each other).
MAX_BANDED = 8
DPI = 120


def _colors(n: int) -> list:
  cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
  return [cmap(i % cmap.N) for i in range(n)]


def _fmt_ci(v, ci) -> str:
  if v is None or not np.isfinite(v):
    return "n/a"
  return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"


def _save(fig, directory: str, name: str) -> str:
  fig.savefig(f"{directory}/{name}", dpi=DPI, bbox_inches="tight")
  plt.close(fig)
  return name


def _subtitle(r: dict[str, Any]) -> str:
  bits = [r.get("probe") and f"probe {r['probe']}", r.get("protocol"),
          f"{r['n_records']} records"]
  return ", ".join(b for b in bits if b)


def roc_pr(r: dict[str, Any], directory: str) -> str | None:
  """ROC and precision-recall curves of every label, with 95% bootstrap bands."""
  labels = [l for l in r["label_names"] if l in r["curves"]]
  if not labels:
    return None
  band = len(labels) <= MAX_BANDED
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5.4))
  for color, l in zip(_colors(len(labels)), labels):
    m, roc, pr = r["per_label"][l], r["curves"][l]["roc"], r["curves"][l]["pr"]
    ax1.plot(roc["fpr"], roc["tpr"], color=color, lw=1.8,
             label=f"{l}: {_fmt_ci(m['auroc'], m['auroc_ci'])}")
    ax2.plot(pr["recall"], pr["precision"], color=color, lw=1.8,
             label=f"{l}: {_fmt_ci(m['auprc'], m['auprc_ci'])}")
    ax2.axhline(m["prevalence"], color=color, lw=0.9, ls=":")
    if band:
      ax1.fill_between(roc["fpr"], roc["tpr_lo"], roc["tpr_hi"], color=color, alpha=0.12,
                       lw=0)
      ax2.fill_between(pr["recall"], pr["precision_lo"], pr["precision_hi"], color=color,
                       alpha=0.12, lw=0)
  ax1.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="chance")
  ax1.set(xlabel="False positive rate (1 - specificity)", ylabel="True positive rate "
          "(sensitivity)", title="ROC curves (AUROC [95% CI])", xlim=(0, 1), ylim=(0, 1.01))
  ax2.plot([], [], color="0.4", ls=":", lw=0.9, label="prevalence (chance)")
  ax2.set(xlabel="Recall (sensitivity)", ylabel="Precision (PPV)",
          title="Precision-recall curves (AUPRC [95% CI])", xlim=(0, 1), ylim=(0, 1.01))
  for ax in (ax1, ax2):
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if ax is ax1 else "upper right", fontsize=8, framealpha=0.9)
    ax.set_aspect("equal")
  fig.suptitle(f"Discrimination ({_subtitle(r)})" + ("; shaded: 95% bootstrap band"
                                                      if band else ""), fontsize=11)
  fig.tight_layout()
  return _save(fig, directory, "roc_pr.png")


def calibration_plot(r: dict[str, Any], directory: str) -> str | None:
  """Reliability diagram of every label over a histogram of the predicted probabilities."""
  labels = [l for l in r["label_names"] if l in r["curves"]]
  if not labels:
    return None
  fig, (ax, axh) = plt.subplots(2, 1, figsize=(6.5, 7.5), sharex=True,
                                gridspec_kw={"height_ratios": [3, 1]})
  ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfect calibration")
  for color, l in zip(_colors(len(labels)), labels):
    c, m = r["curves"][l]["calibration"], r["per_label"][l]
    ax.plot(c["mean_predicted"], c["observed"], "o-", color=color, ms=4, lw=1.5,
            label=f"{l} (Brier {m['brier']:.3f}, ECE {m['ece']:.3f})")
    h = c["histogram"]
    axh.stairs(h["counts"], h["edges"], color=color, lw=1.3)
  axh.set_yscale("symlog", linthresh=10)  # the mass near 0 would flatten every other bin
  ax.set(ylabel="Observed frequency", xlim=(0, 1), ylim=(0, 1),
         title=f"Calibration ({r['calibration']['strategy']} bins, "
               f"{r['calibration']['bins']} per label)\n{_subtitle(r)}")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="upper left")
  axh.set(xlabel="Predicted probability", ylabel="Predictions")
  axh.grid(alpha=0.3)
  return _save(fig, directory, "calibration.png")


def decision_curves(r: dict[str, Any], directory: str) -> str | None:
  """Net benefit of the model against treat-all and treat-none, one panel per label."""
  labels = [l for l in r["label_names"] if l in r["curves"]][:12]
  if not labels:
    return None
  cols = min(3, len(labels))
  rows = -(-len(labels) // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
  for ax, color, l in zip(axes.flat, _colors(len(labels)), labels):
    d = r["curves"][l]["decision_curve"]
    t = np.asarray(d["threshold"])
    ax.plot(t, d["model"], color=color, lw=1.8, label="model")
    ax.plot(t, d["treat_all"], color="0.3", ls="--", lw=1.2, label="treat all")
    ax.plot(t, d["treat_none"], color="0.6", ls=":", lw=1.5, label="treat none")
    prev = r["per_label"][l]["prevalence"]
    ax.set(ylim=(-0.05 * max(prev, 0.2), prev * 1.15 + 0.01), xlim=(0, 1),
           title=f"{l} (prevalence {prev:.2f})", xlabel="Threshold probability",
           ylabel="Net benefit")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
  for ax in list(axes.flat)[len(labels):]:
    ax.axis("off")
  fig.suptitle(f"Decision curves ({_subtitle(r)})", fontsize=11)
  fig.tight_layout()
  return _save(fig, directory, "decision_curve.png")


def label_efficiency_plot(r: dict[str, Any], directory: str) -> str | None:
  """Macro (and per-label) AUROC against the number of training records."""
  le = r.get("label_efficiency")
  if not le:
    return None
  n = np.array([p["n_train"] for p in le], float)
  fig, ax = plt.subplots(figsize=(7, 4.8))
  for color, l in zip(_colors(len(r["label_names"])), r["label_names"]):
    ax.plot(n, [p["per_label_auroc"].get(l, np.nan) for p in le], "-", color=color,
            lw=1, alpha=0.6, marker=".", label=l)
  mean = np.array([p["macro_auroc_mean"] if p["macro_auroc_mean"] is not None else np.nan
                   for p in le], float)
  std = np.array([p["macro_auroc_std"] if p["macro_auroc_std"] is not None else np.nan
                  for p in le], float)
  ax.errorbar(n, mean, yerr=np.nan_to_num(std), color="k", lw=2.2, marker="o", capsize=4,
              label="macro (mean ± std over runs)", zorder=5)
  ax.set_xscale("log")
  ax.set_xticks(n)
  ax.set_xticklabels([f"{p['train_size']}\n({int(round(p['n_train']))})" for p in le])
  ax.minorticks_off()
  ax.axhline(0.5, color="0.6", ls="--", lw=1)
  ax.set(xlabel="Training records (requested size; mean actual)", ylabel="AUROC",
         title=f"Label efficiency ({_subtitle(r)})\n{le[0]['n_runs']} run(s) per size "
               "(seeds x repeats; a CV run pools its folds)")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8, loc="lower right")
  return _save(fig, directory, "label_efficiency.png")


def tsne_sample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
  """Row indices for the t-SNE: balanced per class for one label, else a random sample."""
  rng = np.random.default_rng(seed)
  y = np.asarray(labels) > 0.5
  if y.shape[1] == 1:
    pos, neg = np.flatnonzero(y[:, 0]), np.flatnonzero(~y[:, 0])
    k = min(max_points // 2, pos.size, neg.size)
    if k:
      return np.sort(np.r_[rng.choice(pos, k, replace=False), rng.choice(neg, k, replace=False)])
  n = y.shape[0]
  return np.sort(rng.choice(n, min(n, max_points), replace=False))


def tsne_plot(embeddings: dict[str, np.ndarray], labels: np.ndarray,
              label_names: list[str], directory: str, *, max_points: int = 500,
              seed: int = 0, return_coordinates: bool = False):
  """t-SNE of each source's embeddings (rows) coloured by each label (columns); the file name
  (with return_coordinates: (file, sampled row indices, {source: (n, 2) coordinates}))."""
  from sklearn import manifold  # pylint: disable=g-import-not-at-top
  if not embeddings or len(labels) < 5:
    return None
  idx = tsne_sample(labels, max_points, seed)
  names = label_names[:6]
  coords = {}
  fig, axes = plt.subplots(len(embeddings), len(names), squeeze=False,
                           figsize=(3.3 * len(names) + 0.5, 3.3 * len(embeddings) + 0.6))
  for i, (src, x) in enumerate(embeddings.items()):
    x = np.asarray(x, np.float64)[idx]
    x = (x - x.mean(0)) / np.where(x.std(0) > 0, x.std(0), 1.0)
    # One OpenMP thread: the Barnes-Hut gradient spun 60x slower with 2 threads on a busy
    # 2-core machine; the result does not depend on the thread count.
    with threadpoolctl.threadpool_limits(1):
      xy = manifold.TSNE(2, perplexity=min(30.0, (len(idx) - 1) / 3.0), init="pca",
                         random_state=seed).fit_transform(x)
    coords[src] = xy
    for j, (ax, color, l) in enumerate(zip(axes[i], _colors(len(names)), names)):
      pos = labels[idx, label_names.index(l)] > 0.5
      ax.scatter(*xy[~pos].T, s=7, color="0.75", label="negative", lw=0)
      ax.scatter(*xy[pos].T, s=9, color=color, label=f"{l} ({int(pos.sum())})", lw=0)
      ax.set_xticks([])
      ax.set_yticks([])
      ax.legend(fontsize=7, loc="best", markerscale=1.5)
      if i == 0:
        ax.set_title(l)
      if j == 0:
        ax.set_ylabel(src if len(src) < 40 else "..." + src[-37:], fontsize=8)
  fig.suptitle(f"t-SNE of {len(idx)} embeddings"
               + (" (balanced per class)" if labels.shape[1] == 1 else "")
               + f", coloured by label (seed {seed})", fontsize=11)
  fig.tight_layout()
  name = _save(fig, directory, "tsne.png")
  return (os.path.join(directory, name), idx, coords) if return_coordinates else name


def regression_scatter(r: dict[str, Any], directory: str, max_points: int = 5000) -> str | None:
  """Predicted vs true value per target, the identity line, and the mean truth in deciles of
  the prediction (the calibration curve of a regression)."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = r["label_names"]
  if not names:
    return None
  fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.2), squeeze=False)
  rng = np.random.default_rng(0)
  for ax, n in zip(axes[0], names):
    y, p = (np.asarray(r["curves"][n][k], np.float64) for k in ("y", "p"))
    keep = np.isfinite(y) & np.isfinite(p)
    y, p = y[keep], p[keep]
    shown = rng.choice(y.size, max_points, replace=False) if y.size > max_points else slice(None)
    ax.scatter(y[shown], p[shown], s=6, alpha=0.4, color="#4477aa", lw=0)
    if y.size:
      lo, hi = float(min(y.min(), p.min())), float(max(y.max(), p.max()))
      ax.plot([lo, hi], [lo, hi], "--", color="grey", lw=1, label="identity")
      edges = np.unique(np.quantile(p, np.linspace(0, 1, 11)))
      which = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, max(len(edges) - 2, 0))
      mp = [p[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
      my = [y[which == b].mean() for b in range(len(edges) - 1) if (which == b).any()]
      ax.plot(my, mp, "o-", color="#cc3311", ms=4, label="decile means")
    m = r["per_target"][n]
    ax.set_title(f"{n}: MAE {m['mae']:.3g}, R² {m['r2']:.2f}", fontsize=9)
    ax.set_xlabel("true value")
    ax.set_ylabel("predicted")
    ax.legend(fontsize=7, loc="upper left")
  fig.suptitle(f"Predicted vs true ({_subtitle(r)})", fontsize=11)
  fig.tight_layout()
  return _save(fig, directory, "regression.png")


def write_all(r: dict[str, Any], directory: str, *,
              embeddings: dict[str, np.ndarray] | None = None,
              tsne_labels: np.ndarray | None = None, tsne_max: int = 500,
              seed: int = 0) -> list[tuple[str, str]]:
  """Every figure the report supports; (caption, file name) of those written."""
  if r.get("task") == "regression":
    name = regression_scatter(r, directory)
    return [("Predicted vs true", name)] if name else []
  out = []
  for caption, fn in (("ROC and precision-recall curves", roc_pr),
                      ("Calibration", calibration_plot),
                      ("Decision curves", decision_curves),
                      ("Label efficiency", label_efficiency_plot)):
    name = fn(r, directory)
    if name:
      out.append((caption, name))
  if embeddings and tsne_labels is not None:
    name = tsne_plot(embeddings, tsne_labels, list(r["label_names"]), directory,
                     max_points=tsne_max, seed=seed)
    if name:
      out.append(("t-SNE of the embeddings", name))
  return out
