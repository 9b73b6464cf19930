"""Optimizer and learning-rate schedule built from a config."""

from __future__ import annotations

import re
from typing import Any

import jax
import ml_collections
import optax

from ecgjax import tree


def peak_learning_rate(config: ml_collections.ConfigDict) -> float:
  """`base_lr * global_batch / 256`: the linear scaling rule of the MAE family."""
  return config.base_lr * config.batch_size / 256.0


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup from 0 to the peak, then half-cosine to `min_lr_ratio * peak`."""
  peak = peak_learning_rate(config)
  warmup = int(config.warmup_steps)
  decay = max(int(config.total_steps) - warmup, 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=peak, warmup_steps=warmup,
      decay_steps=warmup + decay, end_value=peak * config.min_lr_ratio)


WEIGHT_DECAY_SCOPES = ("matrices", "all")


def weight_decay_mask(params: Any, scope: str = "matrices") -> Any:
  """Which parameters AdamW decays: "matrices" = matrices, kernels and tables only (biases,
  norm scales and single vectors such as SEP or the mask token are left alone, as the
  MAE/ST-MEM recipes do); "all" = every parameter, as fairseq's Adam with decoupled weight
  decay does in ECG-FM's pretraining. Frozen parameters never change either way."""
  if scope not in WEIGHT_DECAY_SCOPES:
    raise ValueError(f"weight decay scope must be one of {WEIGHT_DECAY_SCOPES}, got {scope!r}")
  if scope == "all":
    return jax.tree.map(lambda p: True, params)
  return jax.tree.map(lambda p: p.ndim >= 2, params)


def _frozen_labels(params: Any, patterns: tuple[str, ...]) -> Any:
  compiled = [re.compile(p) for p in patterns]
  return tree.map_with_path_str(
      lambda path, _: "frozen" if any(c.search(path) for c in compiled) else "train", params)


def make_optimizer(config: ml_collections.ConfigDict, params: Any,
                   frozen_patterns: tuple[str, ...] = ()) -> tuple[optax.GradientTransformation,
                                                                    optax.Schedule]:
  """AdamW with clipping, weight-decay mask and frozen parameters; returns (tx, schedule)."""
  if config.optimizer != "adamw":
    raise ValueError(f"config.optimizer: only 'adamw' is available, got {config.optimizer!r}")
  schedule = make_schedule(config)
  parts = []
  if config.grad_clip_norm > 0:
    parts.append(optax.clip_by_global_norm(config.grad_clip_norm))
  scope = config.get("weight_decay_scope", "matrices")
  if scope not in WEIGHT_DECAY_SCOPES:  # before any step, naming the key
    raise ValueError(f"config.weight_decay_scope must be one of {WEIGHT_DECAY_SCOPES}, "
                     f"got {scope!r}")
  parts.append(optax.adamw(schedule, b1=config.b1, b2=config.b2, eps=config.adam_eps,
                           weight_decay=config.weight_decay,
                           mask=lambda p: weight_decay_mask(p, scope)))
  tx = optax.chain(*parts)
  if frozen_patterns:
    labels = _frozen_labels(params, frozen_patterns)
    tx = optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)
  return tx, schedule


def count_params(params: Any, frozen_patterns: tuple[str, ...] = ()) -> tuple[int, int]:
  """(total, trainable) parameter counts."""
  labels = jax.tree.leaves(_frozen_labels(params, frozen_patterns))
  sizes = [int(x.size) for x in jax.tree.leaves(params)]
  return sum(sizes), sum(s for s, l in zip(sizes, labels) if l == "train")
