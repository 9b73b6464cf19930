"""`reconstruction`: the masked autoencoder's picture of what it sees and what it rebuilds.

Every `every_steps` steps (`config.vis_every_steps` in the pretraining configs) and after the
last one, two training records (the first readable ones) go through the objective's
`reconstruct` with a fixed masking draw; process 0 draws inputs, masked patches and the
reconstruction of a few leads into WORKDIR/plots/reconstruction_<step>.png. Objectives without
`reconstruct` (the contrastive ones) have nothing to draw: the evaluator is then off.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

from ecgjax import data as data_lib
from ecgjax.eval.evaluators import base


class Evaluator(base.Evaluator):
  """See the module docstring."""

  DEFAULTS = {"type": "reconstruction", "every_steps": 0, "records": 2}

  def __init__(self, name, config, context):
    super().__init__(name, config, context)
    self._batch: dict[str, np.ndarray] | None = None

  @property
  def enabled(self) -> bool:
    return self.every_steps > 0 and hasattr(self.context.objective, "reconstruct")

  @property
  def why_off(self) -> str:
    if not hasattr(self.context.objective, "reconstruct"):
      return "the objective reconstructs nothing"
    return "every_steps is 0"

  def _records(self) -> dict[str, np.ndarray]:
    if self._batch is None:
      source = self.context.extra["train_source"]
      n = int(self.config["records"])
      # eval_batches knows prepared records (already filtered) and skips bad ones.
      batch = next(iter(data_lib.eval_batches(source, self.context.preprocessing,
                                              batch_size=n)))
      self._batch = {"signal": batch["signal"][batch["valid"], 0]}
    return self._batch

  def run(self, state: dict[str, Any], step: int) -> dict[str, Any]:
    objective = self.context.objective
    out = objective.reconstruct(state["params"], self._records()["signal"],
                                jax.random.PRNGKey(self.context.seed))
    if jax.process_index() == 0:
      from ecgjax import plotting  # pylint: disable=g-import-not-at-top  (matplotlib on demand)
      path = os.path.join(self.context.workdir, "plots", f"reconstruction_{step:07d}.png")
      os.makedirs(os.path.dirname(path), exist_ok=True)
      plotting.plot_reconstruction(out["signal"], out["reconstruction"], out["mask"],
                                   objective.leads, objective.model.patch_size, path,
                                   fs=objective.fs)
    return {}
