"""Predictions of a fine-tuned model over records, and the validation metrics that pick epochs.

Every process loads the same eval batch (eval_batches is deterministic) and hands its slice
to the devices, so the jitted forward runs over the whole mesh and returns the batch's
predictions, replicated, to every process.
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import Any, Callable
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ecgjax import data as data_lib
from ecgjax.eval import metrics as metrics_lib
from ecgjax.eval import predictions as pred_lib
from ecgjax.train import mesh as mesh_lib


def make_predict_fn(objective: Any, mesh: Mesh, shardings: Any) -> Callable[..., jax.Array]:
  """Jitted `(params, collections, x (B, views, leads, T), view_mask (B, views)) -> (B, outputs)`:
  the mean over each record's real views (crops or segments)."""

  def fn(params, collections, x, view_mask):
    b, c = x.shape[:2]
    p = objective.predict(params, collections, x.reshape((b * c,) + x.shape[2:]))
    w = view_mask.astype(p.dtype)[..., None]
    return (p.reshape(b, c, -1) * w).sum(1) / jnp.maximum(w.sum(1), 1.0)

  batch = mesh_lib.batch_sharding(mesh)
  return jax.jit(fn, in_shardings=(shardings["params"], shardings["collections"], batch, batch),
                 out_shardings=mesh_lib.replicated(mesh))


def eval_batch_size(requested: int, mesh: Mesh) -> int:
  """`requested` rounded up to a multiple of the device count (each device gets rows)."""
  n = mesh.devices.size
  return max(n, int(math.ceil(requested / n)) * n)


def predict(fn: Callable[..., jax.Array], state: dict[str, Any], source: Any,
            preprocessing: data_lib.Preprocessing, indices: Sequence[int], *, mesh: Mesh,
            batch_size: int, n_crops: int = 1) -> dict[str, np.ndarray]:
  """{record_id, patient_id, fold, labels, p} for the readable records of `indices`."""
  n_proc, proc = jax.process_count(), jax.process_index()
  out: dict[str, list[np.ndarray]] = {k: [] for k in ("record_id", "patient_id", "fold",
                                                      "labels", "p")}
  pending = []
  for batch in data_lib.eval_batches(source, preprocessing, batch_size=batch_size,
                                     n_crops=n_crops, indices=np.asarray(indices)):
    local = batch_size // n_proc
    key = data_lib.batch.model_input_key(batch)  # signal, or an image contract's pixels
    part = {k: batch[k][proc * local:(proc + 1) * local] for k in (key, "view_mask")}
    part = mesh_lib.to_global(part, mesh)
    p = fn(state["params"], state["collections"], part[key], part["view_mask"])
    pending.append((p, batch))
  for p, batch in pending:  # dispatch is asynchronous: read back after queueing all
    valid = batch["valid"]
    out["p"].append(np.asarray(jax.device_get(p), np.float64)[valid])
    for k in ("record_id", "patient_id", "fold", "labels"):
      out[k].append(batch[k][valid])
  if not out["p"]:
    raise ValueError(f"{source!r}: no readable record among the {len(indices)} to predict")
  return {k: np.concatenate(v) for k, v in out.items()}


def to_predictions(d: dict[str, np.ndarray], label_names: Sequence[str],
                   cv_fold: int, task: str = "multilabel") -> pred_lib.Predictions:
  """The downstream suite's predictions table of one split's predictions."""
  n = len(d["record_id"])
  regression = task == "regression"
  return pred_lib.Predictions(
      record_id=np.asarray(d["record_id"]).astype(str),
      patient_id=np.asarray(d["patient_id"]).astype(str),
      fold=np.asarray(d["fold"], np.int64), repeat=np.zeros(n, np.int64),
      cv_fold=np.full(n, cv_fold, np.int64),
      y=np.asarray(d["labels"], np.float64 if regression else np.float32),
      # The CSV's precision, so the printed report equals finetune/report.py's on the file.
      p=(np.asarray(d["p"], np.float64) if regression
         else np.round(np.asarray(d["p"], np.float64), 6)),
      label_names=tuple(label_names), task="regression" if regression else "classification")


def validation_metrics(task: str, y: np.ndarray, p: np.ndarray,
                       label_names: Sequence[str]) -> dict[str, float]:
  """{"score" (higher is better: macro AUROC, or -MSE for regression), and what it is from}."""
  y, p = np.asarray(y, np.float64), np.asarray(p, np.float64)
  if task == "regression":
    mse = float(np.mean((p - y) ** 2))
    return {"score": -mse, "val_mse": mse}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", metrics_lib.SingleClassWarning)
    s = metrics_lib.summarize(y > 0.5, p, label_names)
  q = np.clip(p, 1e-7, 1 - 1e-7)
  if task == "multilabel":
    loss = float(np.mean(-(y * np.log(q) + (1 - y) * np.log(1 - q))))
  else:
    one = np.abs(y.sum(1) - 1) < 1e-6
    loss = float(np.mean(-np.log((q * y).sum(1)[one]))) if one.any() else math.nan
  out = {"score": s["macro_auroc"], "val_macro_auroc": s["macro_auroc"],
         "val_macro_auprc": s["macro_auprc"], "val_loss": loss}
  out.update({f"val_auroc_{n}": m["auroc"] for n, m in s["per_label"].items()})
  return out
