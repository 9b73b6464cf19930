"""`linear_probe`: frozen embeddings of a labelled train and test set -> logistic probe AUROC.

The way a self-supervised run is judged, while it runs (big_vision's few-shot probe plays
this part there). Every `every_steps` steps (and after the last one):
  1. the objective hands over its encoder (`export_encoder`: exactly what the export at the
     end would hold), which embeds both sets on the mesh: each process loads the same eval
     batch and feeds its slice, the record's views (crops or segments) are averaged;
  2. process 0 fits the probe suite's logistic regression (StandardScaler + L2, C by 3-fold
     CV, one model per label) on the train embeddings and scores the test set.
Results: `macro_auroc` and `<label>/auroc` (logged as `eval/<name>/...`), plus the set sizes
and the seconds it took. The records are read and preprocessed once, at the first run.

  --config.evals.probe.train='ptbxl:DIR?folds=1-6' --config.evals.probe.test='ptbxl:DIR?folds=7-8'
  --config.evals.probe.every_steps=1000
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from ecgjax import data as data_lib
from ecgjax import export as export_lib
from ecgjax.errors import ConfigError
from ecgjax.eval import embed as embed_lib
from ecgjax.eval import metrics as metrics_lib
from ecgjax.eval import probes
from ecgjax.eval.evaluators import base


class Evaluator(base.Evaluator):
  """See the module docstring."""

  DEFAULTS = {
      "type": "linear_probe",
      "every_steps": 0,  # 0: only after the last step (when train and test are given)
      "train": "",  # data spec of the labelled records the probe is fitted on
      "test": "",  # data spec of the labelled records it is scored on
      "batch_size": 64,  # records per encoder call (rounded up to the device count)
      "n_crops": 0,  # views per record; 0: the model's reference (ST-MEM 3 when longer)
      "seed": 0,  # the probe's cross-validation seed
  }

  def __init__(self, name, config, context):
    super().__init__(name, config, context)
    self._sets: dict[str, list[dict[str, np.ndarray]]] = {}
    self._label_names: tuple[str, ...] = ()
    self._fn = None
    if bool(self.config["train"]) != bool(self.config["test"]):
      raise ConfigError(f"config.evals.{name}: give both train and test data specs "
                        f"(got train={self.config['train']!r}, test={self.config['test']!r})")

  @property
  def enabled(self) -> bool:
    return bool(self.config["train"] and self.config["test"])

  @property
  def why_off(self) -> str:
    return (f"set config.evals.{self.name}.train and .test to labelled data specs to "
            "probe the encoder during training")

  # -- the encoder ----------------------------------------------------------------------

  def _encoder(self, state: dict[str, Any]) -> tuple[Any, export_lib.Export]:
    objective = self.context.objective
    variables, desc = objective.export_encoder(state["params"], state["collections"])
    desc = dict(desc)
    contract = {**self.context.preprocessing.to_dict(), **desc.pop("input", {})}
    # The same description an export would carry, kept in memory (no file is written).
    exp = export_lib.Export(directory=f"(training state of {self.context.workdir})",
                            config={"model": desc["model"], "variant": desc["variant"],
                                    "encoder": {"module": desc["module"],
                                                "overrides": desc.get("overrides", {})},
                                    "input": contract, "embedding": desc["embedding"]},
                            params=None)
    return variables, exp

  def _prepare(self, exp: export_lib.Export) -> None:
    # Read and preprocess the records once: every later run only re-embeds them.
    pp = data_lib.Preprocessing.of(exp.contract)
    mesh = self.context.mesh
    batch = embed_lib.mesh_batch_size(int(self.config["batch_size"]), mesh)
    t0 = time.perf_counter()
    for key in ("train", "test"):
      source = data_lib.open_source(self.config[key])
      names = tuple(source.label_names)
      if not names:
        raise ConfigError(f"config.evals.{self.name}.{key}={self.config[key]!r} has no "
                          "labels: the probe needs labelled records")
      if key == "train":
        self._label_names = names
      elif names != self._label_names:
        raise ConfigError(f"config.evals.{self.name}: train and test label different "
                          f"things ({list(self._label_names)} vs {list(names)})")
      n_crops = int(self.config["n_crops"]) or embed_lib.default_n_crops(exp, source)
      self._sets[key] = list(data_lib.eval_batches(source, pp, batch_size=min(
          batch, embed_lib.mesh_batch_size(len(source), mesh)), n_crops=n_crops))
    logging.info("evaluator %s: %s records read and preprocessed in %.1fs", self.name,
                 " / ".join(str(sum(int(b["valid"].sum()) for b in self._sets[k]))
                            for k in ("train", "test")), time.perf_counter() - t0)

  # -- one evaluation -------------------------------------------------------------------

  def run(self, state: dict[str, Any], step: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    variables, exp = self._encoder(state)
    if not self._sets:
      self._prepare(exp)
    if self._fn is None:
      enc = exp.config["encoder"]
      self._fn = embed_lib.mesh_embed_fn(
          enc["module"], exp.config["variant"], json.dumps(enc["overrides"], sort_keys=True),
          embed_lib.lead_idx_of(exp), self.context.mesh)
    emb = {k: embed_lib.embed_batches(self._fn, variables, self._sets[k], self.context.mesh)
           for k in ("train", "test")}
    if jax.process_index() != 0:
      return {}  # every process embedded (the mesh needs them all); process 0 probes
    train, test = emb["train"], emb["test"]
    p = probes.fit_predict_logreg(train["embeddings"], train["labels"], test["embeddings"],
                                  seed=int(self.config["seed"]), label_names=self._label_names,
                                  split=f"config.evals.{self.name}.train",
                                  on_single_class="nan", groups=train.get("patient_id"))
    fitted = [j for j in range(p.shape[1]) if np.isfinite(p[:, j]).all()]
    s = metrics_lib.summarize(test["labels"][:, fitted] > 0.5, p[:, fitted],
                              [self._label_names[j] for j in fitted])
    out: dict[str, Any] = {"macro_auroc": s["macro_auroc"]}
    for label in self._label_names:
      m = s["per_label"].get(label)
      out[f"{label}/auroc"] = m["auroc"] if m is not None else math.nan
    out.update(n_train=int(len(train["embeddings"])), n_test=int(len(test["embeddings"])),
               seconds=round(time.perf_counter() - t0, 2))
    logging.info("step %d: eval/%s macro AUROC %.4f (%d train / %d test records, %.1fs)",
                 step, self.name, out["macro_auroc"], out["n_train"], out["n_test"],
                 out["seconds"])
    return out

  def close(self) -> None:
    self._sets.clear()
