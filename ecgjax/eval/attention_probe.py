"""The attention-pooling probe: a frozen encoder's token sequence -> learnt queries -> labels.

The uniform foundation-model benchmark's "Frz" mode (SPEC section 11): instead of the pooled
embedding (the linear probe), a small head attends over the encoder's tokens with learnt
queries, so an encoder whose information sits in a few tokens is not undersold by the mean
(ST-MEM by 0.027 macro AUROC on PTB-XL superdiagnostic in that benchmark).

Head: LayerNorm over the tokens; `num_queries` learnt queries attend over them
(multi-head dot-product attention, `num_heads`, keys/values the normalised tokens); the
queries' outputs are averaged, normalised and mapped to the labels by one linear layer. Trained
with AdamW (lr `lr`, weight decay `weight_decay`) on sigmoid cross-entropy (multilabel) for up
to `epochs` epochs of shuffled batches; after each epoch the validation macro AUROC is measured,
and the epoch with the best one (early stopping after `patience` epochs without gain) gives the
test predictions. Token masks (padding, views a record does not have) are honoured.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn import metrics as skm


class AttentionPool(nn.Module):
  """Learnt-query attention pooling over (B, N, D) tokens -> (B, num_outputs) logits."""
  num_outputs: int
  num_queries: int = 4
  num_heads: int = 4

  @nn.compact
  def __call__(self, tokens: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    d = tokens.shape[-1]
    heads = self.num_heads if d % self.num_heads == 0 else 1
    kv = nn.LayerNorm(name="token_norm")(tokens.astype(jnp.float32))
    q = self.param("queries", nn.initializers.normal(0.02), (self.num_queries, d))
    q = jnp.broadcast_to(q, (tokens.shape[0],) + q.shape)
    attn_mask = None if mask is None else mask[:, None, None, :].astype(bool)
    pooled = nn.MultiHeadDotProductAttention(num_heads=heads, name="attention")(
        q, kv, mask=attn_mask)
    pooled = nn.LayerNorm(name="out_norm")(pooled.mean(1))
    return nn.Dense(self.num_outputs, name="head")(pooled)


@dataclasses.dataclass
class AttentionProbeResult:
  """Test probabilities and how training went."""
  p_test: np.ndarray  # (N_test, labels)
  best_epoch: int
  best_validation_auroc: float
  validation_curve: list[float]


def _batches(n: int, batch: int, rng: np.random.Generator):
  order = rng.permutation(n)
  for i in range(0, n - batch + 1 if n >= batch else 1, batch):
    yield order[i:i + batch]


def macro_auroc(y: np.ndarray, p: np.ndarray) -> float:
  """Mean AUROC over the labels with both classes (validation sets may lack some); NaN if none."""
  y = np.asarray(y) > 0.5
  scores = [skm.roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1])
            if 0 < y[:, j].sum() < len(y)]
  return float(np.mean(scores)) if scores else float("nan")


def _predict(apply, params, tokens, mask, batch: int) -> np.ndarray:
  out = []
  for i in range(0, len(tokens), batch):
    m = None if mask is None else jnp.asarray(mask[i:i + batch])
    out.append(np.asarray(jax.nn.sigmoid(apply(params, jnp.asarray(tokens[i:i + batch]), m))))
  return np.concatenate(out)


def fit_predict_attention(tokens_train: np.ndarray, y_train: np.ndarray,
                          tokens_val: np.ndarray, y_val: np.ndarray, tokens_test: np.ndarray, *,
                          mask_train: np.ndarray | None = None,
                          mask_val: np.ndarray | None = None,
                          mask_test: np.ndarray | None = None, num_queries: int = 4,
                          num_heads: int = 4, lr: float = 1e-3, weight_decay: float = 0.05,
                          epochs: int = 30, batch_size: int = 64, patience: int = 5,
                          seed: int = 0) -> AttentionProbeResult:
  """Trains the head on (tokens_train, y_train), selects the epoch on the validation macro
  AUROC, and returns its test probabilities (module docstring)."""
  y_train = np.asarray(y_train, np.float32)
  n, n_labels = y_train.shape
  if tokens_train.ndim != 3 or len(tokens_train) != n:
    raise ValueError(f"tokens must be (records, tokens, dim) with one row per label row, got "
                     f"{tokens_train.shape} for {n} label rows")
  model = AttentionPool(n_labels, num_queries, num_heads)
  params = model.init(jax.random.PRNGKey(seed), jnp.asarray(tokens_train[:1], jnp.float32),
                      None if mask_train is None else jnp.asarray(mask_train[:1]))
  tx = optax.adamw(lr, weight_decay=weight_decay)
  opt_state = tx.init(params)
  apply = jax.jit(model.apply)

  @jax.jit
  def step(params, opt_state, x, y, m):
    def loss_fn(p):
      return optax.sigmoid_binary_cross_entropy(model.apply(p, x, m), y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  batch = min(batch_size, n)
  best, best_epoch, best_params, curve, stale = -np.inf, -1, params, [], 0
  for epoch in range(epochs):
    for idx in _batches(n, batch, rng):
      m = None if mask_train is None else jnp.asarray(mask_train[idx])
      params, opt_state, _ = step(params, opt_state, jnp.asarray(tokens_train[idx], jnp.float32),
                                  jnp.asarray(y_train[idx]), m)
    p_val = _predict(apply, params, tokens_val, mask_val, batch)
    score = macro_auroc(y_val, p_val)
    curve.append(score)
    if score > best + 1e-6:
      best, best_epoch, best_params, stale = score, epoch, params, 0
    else:
      stale += 1
      if stale >= patience:
        break
  p_test = _predict(apply, best_params, tokens_test, mask_test, batch)
  return AttentionProbeResult(p_test, best_epoch, best, curve)


def token_stats(tokens: np.ndarray) -> dict[str, Any]:
  """Shape and memory of a token array, for logs."""
  return {"records": int(tokens.shape[0]), "tokens": int(tokens.shape[1]),
          "dim": int(tokens.shape[2]), "mib": round(tokens.nbytes / 2 ** 20, 1)}
