"""A finished fine-tuning run's model, back from its workdir: what explanations and later
scoring need without preparing the run's data again.

    model = load_split("runs/eianet", split=0)
    logits = model.predict(x)      # x: (B, H, W, C) printouts or (B, leads, T) signals

It reads WORKDIR/config.json, the split's label names (its predictions_test.csv) and the
validation-selected state (WORKDIR/split<k>/best/), and rebuilds the same objective.
`load_classifier_export` does the same from a classifier's export (a fine-tuned Net1D /
ResNet's WORKDIR/split<k>/export: outputs the task logits), which can be shared without the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from ecgjax import data as data_lib
from ecgjax import export as export_lib
from ecgjax.errors import ConfigError, MissingPathError
from ecgjax.eval import embed as embed_lib
from ecgjax.eval import predictions as pred_lib
from ecgjax.objectives import classifier as model_lib
from ecgjax.objectives import supervised as objective_lib
from ecgjax.objectives.masked_autoencoder import compute_dtype
from ecgjax.train import checkpoint as ckpt_lib
from ecgjax.train import mesh as mesh_lib
from ecgjax.train import step as step_lib


@dataclasses.dataclass
class LoadedModel:
  """One split's fine-tuned model: objective, restored state, contract and labels."""
  config: ml_collections.ConfigDict
  objective: objective_lib.Supervised
  state: dict[str, Any]
  preprocessing: Any  # data.Preprocessing (signals) or data.ImagePreprocessing (printouts)
  label_names: tuple[str, ...]
  split: int

  @property
  def module(self) -> Any:
    """The flax module whose first output is the task logits."""
    return self.objective.model

  def variables(self) -> dict[str, Any]:
    """The flax variables of `module` (params without log-variances, BN stats)."""
    params = {k: v for k, v in self.state["params"].items() if k != "log_vars"}
    return {"params": params, **self.state["collections"]}

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Probabilities (multilabel: sigmoid; multiclass: softmax) or regression outputs."""
    p = self.objective.predict(self.state["params"], self.state["collections"],
                               jax.numpy.asarray(x))
    return np.asarray(p)


@dataclasses.dataclass
class ExportedClassifier:
  """A classifier's export (outputs = task logits): the same interface as LoadedModel."""
  export: export_lib.Export
  preprocessing: Any
  label_names: tuple[str, ...]
  task: str

  @property
  def module(self) -> Any:
    """The flax module whose first output is the task logits."""
    return self.export.module

  def variables(self) -> dict[str, Any]:
    """The export's variables (params and BN statistics)."""
    return self.export.variables

  def predict(self, x: np.ndarray) -> np.ndarray:
    """Probabilities (multilabel: sigmoid; multiclass: softmax) or regression outputs."""
    logits, _ = self.module.apply(self.variables(), jax.numpy.asarray(x))
    return np.asarray(objective_lib.predictions(self.task, logits))


@dataclasses.dataclass
class ExportedEncoder:
  """An encoder's export (outputs = the embedding): what class-free explanations (attention
  rollout) need; it has no labels and predicts nothing."""
  export: export_lib.Export
  preprocessing: Any
  label_names: tuple[str, ...] = ()

  @property
  def module(self) -> Any:
    """The encoder module."""
    return self.export.module

  @property
  def lead_idx(self) -> tuple[int, ...] | None:
    """The canonical lead indices its contract feeds (None: the 12 in order)."""
    return embed_lib.lead_idx_of(self.export)

  def variables(self) -> dict[str, Any]:
    """The export's variables."""
    return self.export.variables


def load_export_model(directory: str) -> ExportedClassifier | ExportedEncoder:
  """A classifier's export as `load_classifier_export`, an encoder's as ExportedEncoder."""
  export = export_lib.load_export(directory)
  if export.config["embedding"].get("pooling") == "task logits":
    return load_classifier_export(directory)
  return ExportedEncoder(export, embed_lib.preprocessing_of(export))


def describe(model: Any) -> str:
  """The model's architecture in words, for messages: "resnet1d mu", "st_mem_encoder B/75"."""
  if isinstance(model, (ExportedClassifier, ExportedEncoder)):
    return f"{model.export.config['encoder']['module']} {model.export.config['variant']}"
  backbone = model.objective.backbone
  return f"{backbone.name} {backbone.variant} (fine-tuned)"


def load_classifier_export(directory: str) -> ExportedClassifier:
  """A classifier's export; an encoder's export (no task head) is a clear error."""
  export = export_lib.load_export(directory)
  emb = export.config["embedding"]
  if emb.get("pooling") != "task logits" or not emb.get("labels"):
    raise ConfigError(f"export {export.directory} is an encoder (its output is an "
                      f"embedding: {emb.get('pooling')}), not a classifier with task outputs; "
                      "explain a fine-tuned run (--run WORKDIR) or a fine-tuned Net1D/ResNet's "
                      "WORKDIR/split<k>/export")
  return ExportedClassifier(export, embed_lib.preprocessing_of(export), tuple(emb["labels"]),
                            str(emb.get("task", "multilabel")))


def preprocessing_of(config: ml_collections.ConfigDict, export: Any = None) -> Any:
  """The input contract a run trains on: a signal export's (config.input does not apply), the
  image contract for printouts (config.image: a CNN takes any picture size, so it applies to
  an image export too, with the export's channel count), or config.input."""
  images = config.get("modality", "signal") == "image"
  if export is not None and export.modality != ("image" if images else "signal"):
    raise ConfigError(f"config.export={export.directory} takes {export.modality}s but the run "
                      f"reads {'image' if images else 'signal'}s (configs/finetune.py:input="
                      f"{'signal' if images else 'image'} for this export)")
  if images:
    pp = data_lib.ImagePreprocessing.from_dict(config.image.to_dict())
    if export is not None:
      want = embed_lib.preprocessing_of(export).channels
      if pp.channels != want:
        raise ConfigError(f"config.image.channels={pp.channels} but the export's encoder takes "
                          f"{want}-channel images")
    return pp
  if export is not None:
    return embed_lib.preprocessing_of(export)
  return data_lib.Preprocessing.from_dict(config.input.to_dict())


def backbone_of(config: ml_collections.ConfigDict, export: Any, n_outputs: int
                ) -> model_lib.Backbone:
  """The run's backbone: an export's encoder with its weights, or a Net1D/ResNet by name."""
  dtype = compute_dtype(config.dtype)
  if export is not None:
    return model_lib.backbone_from_export(export, dtype=dtype, pooling=config.pooling or None,
                                          remat=config.get("remat", "none"))
  if config.pooling:
    raise ValueError(f"config.pooling={config.pooling!r} applies to an export's encoder; "
                     f"backbone {config.model} pools in its own way")
  return model_lib.build_backbone(config.model, config.variant, n_outputs, dtype=dtype,
                                  use_bn=config.use_bn, dropout=config.backbone_dropout,
                                  spatial_attention=config.get("spatial_attention"),
                                  attention_residual=bool(config.get("attention_residual")),
                                  remat=config.get("remat", "none"))


def load_split(workdir: str, split: int = 0, devices: Any = None) -> LoadedModel:
  """The validation-selected model of `split` of the finished run in `workdir`."""
  cfg_path = os.path.join(workdir, "config.json")
  sdir = os.path.join(workdir, f"split{split}")
  if not os.path.isfile(cfg_path):
    raise MissingPathError(f"{workdir}: not a fine-tuning run (no config.json)")
  with open(cfg_path) as f:
    config = ml_collections.ConfigDict(json.load(f))
  if "supervised" not in config:  # a run from before the objective's keys had their group
    config.supervised = {k: config[k] for k in objective_lib.DEFAULTS if k in config}
  test_csv = os.path.join(sdir, "predictions_test.csv")
  if not os.path.isfile(test_csv):
    raise MissingPathError(f"{sdir}: split {split} is not finished (no predictions_test.csv)")
  label_names = tuple(pred_lib.read_csv(test_csv).label_names)
  export = export_lib.load_export(config.export) if config.get("export") else None
  preprocessing = preprocessing_of(config, export)
  objective = objective_lib.build_from_config(
      config, backbone_of(config, export, len(label_names)), label_names)
  mesh = mesh_lib.make_mesh(devices or jax.devices()[:1])
  example = data_lib.batch.train_example(preprocessing, len(label_names), n=1)
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.total_steps, cfg.warmup_steps = max(int(cfg.get("total_steps") or 0), 1), 0
  training = step_lib.build_training(cfg, objective, mesh, example)
  abstract = ckpt_lib.abstract_like(training.abstract_state, training.shardings)
  best = ckpt_lib.Checkpointer(os.path.join(sdir, "best"), keep=1, with_data=False,
                               async_save=False)
  step = best.latest_step()
  if step is None:
    raise ConfigError(f"{sdir}/best holds no checkpoint")
  state = best.restore(step, {"params": abstract["params"],
                              "collections": abstract["collections"]}, None)
  best.close()
  return LoadedModel(config, objective, state, preprocessing, label_names, split)
