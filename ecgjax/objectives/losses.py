"""Per-task supervised losses (pure functions of arrays, float32).

Every function returns one loss per task, shape (T,): the mean over the batch rows with
weight 1 (`row_weight`, e.g. rows of a padded batch get 0). Multi-label heads have one
task per label; a multi-class head is one task; regression has one task per target.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSSES = ("bce", "focal", "brl")


def _row_mean(per_elem: jax.Array, row_weight: jax.Array | None) -> jax.Array:
  """(B, T) -> (T,) mean over rows weighted by row_weight (B,)."""
  if row_weight is None:
    return per_elem.mean(0)
  w = row_weight.astype(jnp.float32)[:, None]
  return (per_elem * w).sum(0) / jnp.maximum(w.sum(), 1.0)


def _log_sigmoids(logits: jax.Array) -> tuple[jax.Array, jax.Array]:
  # log p and log (1 - p) without overflow for large |logits|.
  logits = logits.astype(jnp.float32)
  return jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits)


def bce(logits: jax.Array, labels: jax.Array, *, pos_weight: jax.Array | None = None,
        row_weight: jax.Array | None = None) -> jax.Array:
  """Binary cross-entropy per label; positives weighted by pos_weight (T,), as torch's."""
  log_p, log_q = _log_sigmoids(logits)
  y = labels.astype(jnp.float32)
  pw = 1.0 if pos_weight is None else jnp.asarray(pos_weight, jnp.float32)
  return _row_mean(-(pw * y * log_p + (1.0 - y) * log_q), row_weight)


def focal(logits: jax.Array, labels: jax.Array, *, gamma: float = 2.0, alpha: float = 0.25,
          row_weight: jax.Array | None = None) -> jax.Array:
  """Focal loss per label: -a_t (1 - p_t)^gamma log p_t; alpha < 0 turns a_t off (1)."""
  log_p, log_q = _log_sigmoids(logits)
  y = labels.astype(jnp.float32)
  log_pt = y * log_p + (1.0 - y) * log_q
  a_t = 1.0 if alpha < 0 else y * alpha + (1.0 - y) * (1.0 - alpha)
  return _row_mean(-a_t * (1.0 - jnp.exp(log_pt)) ** gamma * log_pt, row_weight)


def batch_recall(logits: jax.Array, labels: jax.Array,
                 row_weight: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """(recall of class 1, recall of class 0) per label on this batch, threshold p = 0.5.

  A class absent from the batch gets recall 0: no row of that class exists, so the
  weight it sets multiplies nothing.
  """
  y = labels.astype(jnp.float32)
  w = (jnp.ones(y.shape[:1], jnp.float32) if row_weight is None
       else row_weight.astype(jnp.float32))[:, None]
  pred = (logits > 0).astype(jnp.float32)
  pos, neg = (y * w).sum(0), ((1.0 - y) * w).sum(0)
  rec1 = (pred * y * w).sum(0) / jnp.maximum(pos, 1.0)
  rec0 = ((1.0 - pred) * (1.0 - y) * w).sum(0) / jnp.maximum(neg, 1.0)
  return rec1, rec0


def binary_recall(logits: jax.Array, labels: jax.Array, *,
                  row_weight: jax.Array | None = None) -> jax.Array:
  """EIANet's binary recall loss (SPEC.md section 6) per label, averaged over rows.

  BRLoss = -(1/N) sum_i (1 - Recall_{y_i}) [y_i log p_i + (1 - y_i) log(1 - p_i)]: each
  row's cross-entropy weighted by one minus the batch recall of its own class, a
  constant (no gradient flows through the recall). The SPEC writes the sum; the mean
  only rescales the learning rate and keeps the loss comparable with BCE.
  """
  rec1, rec0 = jax.lax.stop_gradient(batch_recall(logits, labels, row_weight))
  log_p, log_q = _log_sigmoids(logits)
  y = labels.astype(jnp.float32)
  weight = y * (1.0 - rec1) + (1.0 - y) * (1.0 - rec0)
  return _row_mean(-weight * (y * log_p + (1.0 - y) * log_q), row_weight)


def softmax_ce(logits: jax.Array, labels: jax.Array, *,
               row_weight: jax.Array | None = None) -> jax.Array:
  """Multi-class cross-entropy, one task (shape (1,)); labels one-hot (B, C).

  Rows whose labels are not exactly one class (none, or several) carry no loss.
  """
  y = labels.astype(jnp.float32)
  one = (jnp.abs(y.sum(-1) - 1.0) < 1e-6) & (y.max(-1) > 0.5)
  w = one.astype(jnp.float32) * (1.0 if row_weight is None else row_weight)
  nll = -(y * jax.nn.log_softmax(logits.astype(jnp.float32))).sum(-1)
  return _row_mean(nll[:, None], w)


def mse(outputs: jax.Array, targets: jax.Array, *,
        row_weight: jax.Array | None = None) -> jax.Array:
  """Squared error per regression target."""
  d = outputs.astype(jnp.float32) - targets.astype(jnp.float32)
  return _row_mean(d * d, row_weight)


def multilabel(name: str, logits: jax.Array, labels: jax.Array, *,
               pos_weight: jax.Array | None = None, focal_gamma: float = 2.0,
               focal_alpha: float = 0.25, row_weight: jax.Array | None = None) -> jax.Array:
  """The multi-label loss `name` (bce | focal | brl) per label."""
  if name == "bce":
    return bce(logits, labels, pos_weight=pos_weight, row_weight=row_weight)
  if name == "focal":
    return focal(logits, labels, gamma=focal_gamma, alpha=focal_alpha, row_weight=row_weight)
  if name == "brl":
    return binary_recall(logits, labels, row_weight=row_weight)
  raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
