"""The "supervised" objective: backbone + head, per-task losses, weighting, PCGrad.

Tasks: multi-label (one logit and one task per label), multi-class (softmax, one task),
regression (one output and one task per target). `LossAux.tasks` holds the weighted task
terms (their sum is the loss) keyed "000_<label>", ... so the engine's gradient combiner
(PCGrad) sees them in label order.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ecgjax import objectives
from ecgjax.objectives import losses, pcgrad, weighting
from ecgjax.objectives import classifier as model_lib
from ecgjax.objectives import base, register

TASKS = ("multilabel", "multiclass", "regression")
MODES = ("full", "linear_probe", "scratch")
# Per-task loss terms are logged up to this many tasks (ECGFounder's 150 would flood the log).
MAX_LOGGED_TASKS = 16


# config.supervised: this objective's keys, declared once (configs/finetune.py sets values).
DEFAULTS: dict[str, Any] = dict(
    task="multilabel",  # multilabel (one logit per label) | multiclass | regression
    loss="bce",  # multilabel: bce | focal | brl (binary recall loss, EIANet)
    pos_weight="none",  # BCE positive weights: none | balanced (n_neg/n_pos of the training
                        # split) | one number or one per label
    focal_gamma=2.0,  # focal loss (1 - p_t)^gamma
    focal_alpha=0.25,  # focal loss class weight; < 0: none
    weighting="none",  # task weighting: none (mean) | uncertainty (Kendall, s_t = 0)
    pcgrad="none",  # none | paper (random order, sum) | reference (AnyECG-CCTA: fixed order,
                    # only later tasks, mean)
    layer_decay=0.0,  # layer-wise lr decay for transformer encoders (e.g. 0.75); 0 = off
    head_dropout=0.0,  # dropout before the new head of an export's encoder
    freeze="",  # parameters frozen in a full fine-tune: cnn (ECG-FM's feature extractor) or
                # comma-separated regexes over backbone paths
)


class Supervised(base.Objective):
  """Fine-tunes `backbone` on labels; see the module docstring."""

  def __init__(self, backbone: model_lib.Backbone, label_names: Sequence[str], *,
               task: str = DEFAULTS["task"], loss: str = DEFAULTS["loss"],
               pos_weight: np.ndarray | None = None,
               focal_gamma: float = DEFAULTS["focal_gamma"],
               focal_alpha: float = DEFAULTS["focal_alpha"],
               weighting_name: str = DEFAULTS["weighting"],
               pcgrad_variant: str = DEFAULTS["pcgrad"], mode: str = "full",
               layer_decay: float = DEFAULTS["layer_decay"],
               head_dropout: float = DEFAULTS["head_dropout"], freeze: str = DEFAULTS["freeze"]):
    if task not in TASKS:
      raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if mode not in MODES:
      raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if task == "multilabel" and loss not in losses.LOSSES:
      raise ValueError(f"loss must be one of {losses.LOSSES}, got {loss!r}")
    if weighting_name not in weighting.WEIGHTINGS:
      raise ValueError(f"weighting must be one of {weighting.WEIGHTINGS}, "
                       f"got {weighting_name!r}")
    if not 0 <= head_dropout < 1:
      raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
    if mode == "scratch" and backbone.params is not None:
      # The export's architecture from random weights: the baseline its pretraining must beat.
      backbone = dataclasses.replace(backbone, params=None)
    self.backbone = backbone
    self.label_names = tuple(label_names)
    self.task, self.loss_name, self.mode = task, loss, mode
    self.pos_weight = None if pos_weight is None else np.asarray(pos_weight, np.float32)
    self.focal_gamma, self.focal_alpha = float(focal_gamma), float(focal_alpha)
    self.weighting = weighting_name
    self.layer_decay = float(layer_decay)
    self.model = model_lib.make_model(backbone, len(self.label_names), head_dropout)
    self.task_names = (("class",) if task == "multiclass" else self.label_names)
    self.grad_combiner = pcgrad.make_combiner(pcgrad_variant)
    self.frozen_patterns = ((model_lib.FROZEN_BACKBONE,) if mode == "linear_probe" else ())
    self.frozen_patterns += model_lib.freeze_patterns(freeze)

  @property
  def num_tasks(self) -> int:
    """Number of task terms (labels, or 1 for multi-class)."""
    return len(self.task_names)

  def init(self, rng, batch):
    """Head and backbone params (pretrained where given), log-variances, BN statistics."""
    r_params, r_drop = jax.random.split(rng)
    x = jnp.asarray(base.model_input(batch))
    variables = self.model.init({"params": r_params, "dropout": r_drop}, x, train=False)
    params = dict(variables["params"])
    if self.backbone.params is not None:
      params = model_lib.load_pretrained(params, self.backbone.params)
    if self.weighting == "uncertainty":
      params["log_vars"] = weighting.init_log_vars(self.num_tasks)
    collections = {k: v for k, v in variables.items() if k != "params"}
    collections = model_lib.load_pretrained_collections(collections, self.backbone.collections)
    return params, collections

  def apply(self, params, collections, x, *, train: bool, rng: jax.Array | None = None):
    """(outputs (B, n_outputs), updated collections); BN statistics update in training."""
    model_params = {k: v for k, v in params.items() if k != "log_vars"}
    variables = {"params": model_params, **collections}
    # A linear probe keeps the backbone in inference mode: frozen BN statistics, no dropout.
    backbone_train = train and self.mode != "linear_probe"
    rngs = {"dropout": rng} if rng is not None else {}
    if backbone_train and collections:
      (out, _), updated = self.model.apply(variables, x, train=train,
                                           backbone_train=backbone_train, rngs=rngs,
                                           mutable=list(collections))
      return out, updated
    out, _ = self.model.apply(variables, x, train=train, backbone_train=backbone_train,
                              rngs=rngs)
    return out, collections

  def task_losses(self, outputs: jax.Array, labels: jax.Array) -> jax.Array:
    """Unweighted loss per task, (T,)."""
    if self.task == "multilabel":
      pw = None if self.pos_weight is None else jnp.asarray(self.pos_weight)
      return losses.multilabel(self.loss_name, outputs, labels, pos_weight=pw,
                               focal_gamma=self.focal_gamma, focal_alpha=self.focal_alpha)
    if self.task == "multiclass":
      return losses.softmax_ce(outputs, labels)
    return losses.mse(outputs, labels)

  def loss(self, params, collections, batch, rng, step):
    """Sum of the weighted task terms; per-task raw losses logged as loss_<task>."""
    del step
    outputs, collections = self.apply(params, collections, base.model_input(batch), train=True,
                                      rng=rng)
    raw = self.task_losses(outputs, batch["labels"])
    tasks = weighting.weighted_tasks(raw, self.weighting, params.get("log_vars"))
    terms: dict[str, jax.Array] = {}
    metrics: dict[str, jax.Array] = {}
    if self.num_tasks <= MAX_LOGGED_TASKS:
      terms = {f"loss_{n}": raw[i] for i, n in enumerate(self.task_names)}
      if self.weighting == "uncertainty":
        metrics = {f"log_var_{n}": params["log_vars"][i] for i, n in enumerate(self.task_names)}
    named = {f"{i:03d}_{n}": tasks[i] for i, n in enumerate(self.task_names)}
    return tasks.sum(), base.LossAux(terms=terms, metrics=metrics, collections=collections,
                                     tasks=named)

  def predict(self, params, collections, x: jax.Array) -> jax.Array:
    """Probabilities (sigmoid / softmax) or regression outputs, inference mode."""
    outputs, _ = self.apply(params, collections, x, train=False)
    return predictions(self.task, outputs)

  def lr_scales(self, params):
    """Layer-wise decay for transformer backbones (0 or 1: off)."""
    if self.layer_decay in (0.0, 1.0):
      return None
    return model_lib.layer_decay_scales(params, self.layer_decay)

  def export_encoder(self, params, collections):
    """The fine-tuned backbone (with BN statistics) and its description."""
    b = self.backbone
    desc = {"model": b.name, "variant": b.variant, "module": b.name,
            "overrides": dict(b.overrides),
            "embedding": {"dim": len(self.label_names), "pooling": "task logits",
                          "labels": list(self.label_names), "task": self.task}}
    if b.description is not None:  # an export's encoder: re-export it as it came
      desc = {"model": b.description["model"], "variant": b.variant,
              "module": b.description["encoder"]["module"], "overrides": dict(b.overrides),
              "embedding": b.description["embedding"]}
    # FinetuneModel holds the backbone as its submodule "backbone" in every collection.
    variables = {"params": params["backbone"],
                 **{k: v["backbone"] for k, v in (collections or {}).items() if "backbone" in v}}
    return variables, desc


def predictions(task: str, outputs: jax.Array) -> jax.Array:
  """The task's predictions from its outputs: sigmoid (multilabel), softmax (multiclass), or
  the outputs themselves (regression)."""
  if task == "multilabel":
    return jax.nn.sigmoid(outputs)
  if task == "multiclass":
    return jax.nn.softmax(outputs, axis=-1)
  return outputs


def build_from_config(config: ml_collections.ConfigDict, backbone: model_lib.Backbone,
                      label_names: Sequence[str],
                      pos_weight: np.ndarray | None = None) -> Supervised:
  """The objective `config` describes, for one split (pos_weight: the array computed from the
  training side for `config.supervised.pos_weight`)."""
  o = objectives.options(config, "supervised")
  return Supervised(backbone, label_names, task=o["task"], loss=o["loss"],
                    pos_weight=pos_weight, focal_gamma=o["focal_gamma"],
                    focal_alpha=o["focal_alpha"], weighting_name=o["weighting"],
                    pcgrad_variant=o["pcgrad"], mode=config.mode,
                    layer_decay=o["layer_decay"], head_dropout=o["head_dropout"],
                    freeze=o["freeze"])


@register("supervised", DEFAULTS)
def _build(config: ml_collections.ConfigDict) -> Supervised:
  """Registry entry: a Net1D/ResNet backbone named by config.model (labels from config.labels)."""
  from ecgjax.objectives.masked_autoencoder import compute_dtype
  labels = [l for l in str(config.labels).split(",") if l]
  if not labels:
    raise ValueError("objective 'supervised' from the registry needs config.labels; "
                     "finetune/finetune.py reads them from the data")
  backbone = model_lib.build_backbone(config.model, config.variant, len(labels),
                                      dtype=compute_dtype(config.dtype),
                                      use_bn=config.use_bn, dropout=config.backbone_dropout,
                                      remat=config.get("remat", "none"))
  return build_from_config(config, backbone, labels)
