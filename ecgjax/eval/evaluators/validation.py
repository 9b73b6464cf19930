"""`validation`: a supervised model's predictions on held-out records -> the selection score.

Fine-tuning's evaluator (it drives `train.hooks.KeepBest`, which keeps the best epoch). The
recipe that builds it hands over the records in `context.extra`: `source` (prepared records),
`indices` (the validation rows), `label_names`, `n_crops`, `batch_size` and optionally
`predict_fn` (the recipe's compiled predictor, so validation and test share one
compilation). Predictions run on the mesh (every process feeds its slice of the same batch);
the score is macro AUROC (or -MSE for regression), with AUPRC, the loss and per-label AUROC
beside it.
"""

from __future__ import annotations

from typing import Any

from ecgjax.eval import predict as predict_lib
from ecgjax.eval.evaluators import base


class Evaluator(base.Evaluator):
  """See the module docstring."""

  DEFAULTS = {"type": "validation", "every_steps": 0, "task": "multilabel"}

  def __init__(self, name, config, context):
    super().__init__(name, config, context)
    self._fn = None

  def run(self, state: dict[str, Any], step: int) -> dict[str, Any]:
    ctx, extra = self.context, self.context.extra
    if self._fn is None:
      self._fn = extra.get("predict_fn") or predict_lib.make_predict_fn(
          ctx.objective, ctx.mesh, ctx.shardings)
    d = predict_lib.predict(self._fn, state, extra["source"], ctx.preprocessing,
                            extra["indices"], mesh=ctx.mesh, batch_size=extra["batch_size"],
                            n_crops=extra["n_crops"])
    return predict_lib.validation_metrics(self.config["task"], d["labels"], d["p"],
                                          extra["label_names"])
