"""The contract between objectives (what is learned) and the engine (how it is trained).

An objective owns its model(s), its loss, its metrics and the way its encoder is
exported. The engine only ever calls the methods below, so a new objective (MAE,
contrastive, wav2vec 2.0, hybrid, supervised multi-task) never touches the engine.
"""

from __future__ import annotations

import abc
from typing import Any, Callable, NamedTuple

import jax

PyTree = Any
Batch = dict[str, jax.Array]


def model_input(batch: Batch) -> jax.Array:
  """What the model reads from a batch: `pixels` (images, B x H x W x C) or `signal`."""
  return batch["pixels"] if "pixels" in batch else batch["signal"]


class LossAux(NamedTuple):
  """Everything an objective reports besides the scalar loss (a pytree)."""
  terms: dict[str, jax.Array]        # per-term losses, logged under their names
  metrics: dict[str, jax.Array]      # other scalar metrics (accuracy, perplexity, ...)
  collections: PyTree                # updated mutable collections (e.g. batch_stats)
  tasks: dict[str, jax.Array] | None = None  # per-task losses whose sum is the loss;
                                             # required only by gradient combiners
  # A loss that is a ratio sum / count over the batch (masked patches of present leads) says
  # its count here: gradient accumulation then weights each micro-batch by it, so the update
  # equals the whole global batch's ratio, not a mean of per-micro-batch ratios. None: 1.
  weight: jax.Array | None = None


# Sees per-task gradients stacked on a leading task axis, returns one gradient.
GradCombiner = Callable[[PyTree, jax.Array], PyTree]


class Objective(abc.ABC):
  """A trainable objective: init, loss, export."""

  # Regexes over '/'-joined parameter paths whose updates are zeroed (frozen tables).
  frozen_patterns: tuple[str, ...] = ()
  # Combines per-task gradients (LossAux.tasks) into one, e.g. PCGrad; None: plain gradient.
  grad_combiner: GradCombiner | None = None

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> tuple[PyTree, PyTree]:
    """Returns (params, collections) for a batch of the training shape."""

  @abc.abstractmethod
  def loss(self, params: PyTree, collections: PyTree, batch: Batch,
           rng: jax.Array, step: jax.Array) -> tuple[jax.Array, LossAux]:
    """Scalar loss and its `LossAux`; pure and jittable."""

  @abc.abstractmethod
  def export_encoder(self, params: PyTree, collections: PyTree) -> tuple[PyTree, dict]:
    """({"params": ..., **collections} of the encoder, its JSON-able description) for
    `ecgjax.export`."""

  def lr_scales(self, params: PyTree) -> PyTree | None:
    """Per-parameter learning-rate multipliers (layer-wise decay), or None for all 1."""
    del params
    return None

