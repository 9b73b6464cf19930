"""Backbone + task head for fine-tuning, built by name (Net1D, ResNet) or from an export.

Net1D and the ResNets end in their own `head` Dense, built with one output per task: that is
the task head (ECGFounder's linear probe trains only it). An export's encoder returns a
pooled embedding; a new `head` Dense goes on top. Parameters live under "backbone" (and
"head" for export encoders), so a linear probe freezes every path without a `head` segment.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ecgjax import models
from ecgjax import leads as leads_lib
from ecgjax import tree

PyTree = Any
# Models whose last layer is a Dense head of `num_classes` outputs.
LOGIT_BACKBONES = ("net1d", "resnet1d", "resnet2d")
# Linear probe: everything under "backbone" except a "head" module is frozen.
FROZEN_BACKBONE = r"^backbone/(?!(.*/)?head/)"
_LAYER = re.compile(r"(?:^|/)(?:block|layers)_(\d+)/")


class FinetuneModel(nn.Module):
  """(B, leads, T) -> (task outputs (B, n_outputs) float32, aux with "features")."""
  backbone: nn.Module
  num_outputs: int
  emits_logits: bool  # the backbone's own head already gives num_outputs
  lead_idx: tuple[int, ...] | None = None  # canonical lead indices (ST-MEM subsets)
  image_input: bool = False  # a 2-D backbone: images (B, H, W, C) as they are, or a signal
                             # (B, leads, T) as a one-channel image
  head_dropout: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool = False,
               backbone_train: bool | None = None) -> tuple[jax.Array, dict[str, Any]]:
    # Every backbone has the one encoder signature (x, *, train, lead_idx) -> (out, aux).
    kwargs: dict[str, Any] = {"train": train if backbone_train is None else backbone_train}
    if self.lead_idx is not None:
      kwargs["lead_idx"] = np.asarray(self.lead_idx, np.int32)
    if self.image_input and x.ndim == 3:  # a (leads, T) signal seen as a one-channel image
      x = x[..., None]
    out, aux = self.backbone(x, **kwargs)
    if self.emits_logits:
      return out.astype(jnp.float32), aux
    feats = out.astype(jnp.float32)
    if self.head_dropout > 0:
      feats = nn.Dropout(self.head_dropout, deterministic=not train)(feats)
    logits = nn.Dense(self.num_outputs, name="head")(feats)
    return logits, {**aux, "features": out}


@dataclasses.dataclass
class Backbone:
  """A backbone module and what the fine-tuner needs to know about it."""
  module: nn.Module
  name: str  # registry name
  variant: str
  overrides: dict[str, Any]
  emits_logits: bool
  lead_idx: tuple[int, ...] | None = None
  params: PyTree | None = None  # pretrained weights (an export's), None: random init
  description: dict[str, Any] | None = None  # the export's, for re-exporting
  collections: PyTree | None = None  # the export's other variables (BN running statistics)


def build_backbone(name: str, variant: str, num_outputs: int, *, dtype: Any = jnp.float32,
                   use_bn: bool = True, dropout: float = 0.0,
                   spatial_attention: bool | None = None,
                   attention_residual: bool = False, remat: str = "none") -> Backbone:
  """A randomly initialised Net1D / ResNet with `num_outputs` head units; `spatial_attention`
  (ResNets) overrides the variant's EIANet attention gates (None: the variant's);
  `attention_residual` applies them as x * (1 + a)."""
  if name not in LOGIT_BACKBONES:
    raise ValueError(f"backbone {name!r} is not built by name here; known: "
                     f"{', '.join(LOGIT_BACKBONES)} (an export's encoder: --config.export=DIR)")
  overrides: dict[str, Any] = {"num_classes": int(num_outputs)}
  if name == "net1d":
    overrides.update(use_bn=bool(use_bn), use_dropout=dropout > 0,
                     dropout_rate=float(dropout or 0.5))
  if spatial_attention is not None:
    if not name.startswith("resnet"):
      raise ValueError(f"config.spatial_attention applies to the ResNets, not {name!r}")
    overrides["spatial_attention"] = bool(spatial_attention)
  if attention_residual:
    if not name.startswith("resnet"):
      raise ValueError(f"config.attention_residual applies to the ResNets, not {name!r}")
    overrides["attention_residual"] = True
  # remat is a training-time choice: not among the overrides an export records.
  module = models.build_model(name, variant, dtype=dtype, remat=remat, **overrides)
  return Backbone(module, name, variant, overrides, emits_logits=True)


# `config.freeze` names: parameter groups frozen during a full fine-tune.
FREEZE_GROUPS = {
    # ECG-FM's convolutional feature extractor (its fine-tune recipe freezes the CNN).
    "cnn": r"^backbone/feature_extractor/",
}


def freeze_patterns(freeze: str) -> tuple[str, ...]:
  """Regexes over '/'-joined param paths for `config.freeze`: "" nothing; a group of
  FREEZE_GROUPS ("cnn"); else comma-separated regexes over backbone-relative paths."""
  out = []
  for item in filter(None, (t.strip() for t in str(freeze or "").split(","))):
    if item in FREEZE_GROUPS:
      out.append(FREEZE_GROUPS[item])
      continue
    try:
      re.compile(item)
    except re.error as e:
      raise ValueError(f"config.freeze: {item!r} is neither a group ({', '.join(FREEZE_GROUPS)})"
                       f" nor a valid regex: {e}") from None
    out.append(r"^backbone/" + item.lstrip("^"))
  return tuple(out)


def backbone_from_export(export: Any, *, dtype: Any = jnp.float32,
                         pooling: str | None = None, remat: str = "none") -> Backbone:
  """The encoder of an `ecgjax.export.Export`, with its weights; `pooling` replaces the
  encoder's pooling (ECG-FM: mean | nonzero_mean | feature_nonzero_mean)."""
  enc = export.config["encoder"]
  overrides = dict(enc.get("overrides", {}))
  if pooling:
    probe = models.build_model(enc["module"], export.config["variant"], **overrides)
    if not hasattr(probe, "pooling"):
      raise ValueError(f"config.pooling={pooling!r}: the export's encoder {enc['module']} has "
                       "no pooling option")
    overrides["pooling"] = pooling
  module = models.build_model(enc["module"], export.config["variant"], dtype=dtype, remat=remat,
                              **overrides)
  lead_idx = None
  if models.has_lead_table(module):
    names = leads_lib.parse_leads(export.config["input"]["leads"])
    lead_idx = tuple(int(i) for i in leads_lib.lead_indices(names))
  params = jax.tree.map(np.asarray, export.params)
  return Backbone(module, enc["module"], export.config["variant"], overrides,
                  emits_logits=False, lead_idx=lead_idx, params=params,
                  description={k: export.config[k] for k in ("model", "variant", "encoder",
                                                               "embedding")},
                  collections=jax.tree.map(np.asarray, dict(export.collections)) or None)


def make_model(backbone: Backbone, num_outputs: int, head_dropout: float = 0.0) -> FinetuneModel:
  """The fine-tuning model around `backbone`."""
  return FinetuneModel(backbone.module, int(num_outputs), backbone.emits_logits,
                       lead_idx=backbone.lead_idx,
                       image_input=backbone.name == "resnet2d",
                       head_dropout=float(head_dropout))


def load_pretrained(params: PyTree, pretrained: PyTree, what: str = "weights") -> PyTree:
  """`params` with its "backbone" replaced by `pretrained`; every path and shape must match."""
  diff = tree.compare(pretrained, params["backbone"])
  if not diff.ok:
    raise ValueError(f"pretrained {what} do not fit the backbone: {diff.summary()}")
  out = dict(params)
  out["backbone"] = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), pretrained)
  return out


def load_pretrained_collections(collections: PyTree, pretrained: PyTree | None) -> PyTree:
  """The model's collections with the backbone's part of each replaced by the export's
  (BatchNorm running statistics); a collection the export lacks or the model lacks fails."""
  if not pretrained:
    return collections
  if set(pretrained) != {k for k, v in collections.items() if "backbone" in v}:
    raise ValueError(f"the export's variable collections {sorted(pretrained)} do not match "
                     f"the backbone's {sorted(collections)}")
  return {k: (load_pretrained(v, pretrained[k], f"{k!r} variables") if k in pretrained else v)
          for k, v in collections.items()}


def layer_ids(params: PyTree) -> tuple[PyTree, int]:
  """(layer id per parameter, number of blocks): 0 embeddings, i + 1 block i, top L + 1.

  Blocks are `block_<i>` (ST-MEM) or `layers_<i>` (ECG-FM); the head, log-variances and
  ST-MEM's final `norm` sit on top; everything else (patch/feature embedding) is layer 0.
  """
  paths = tree.flatten(params)
  found = [int(m.group(1)) for p in paths for m in [_LAYER.search(p)] if m]
  depth = max(found) + 1 if found else 0

  def one(path: str, _) -> int:
    m = _LAYER.search(path)
    if m:
      return int(m.group(1)) + 1
    if (path.startswith("head/") or path.startswith("log_vars")
        or re.search(r"(^|/)head/", path) or path.startswith("backbone/norm/")):
      return depth + 1
    return 0

  return tree.map_with_path_str(one, params), depth


def layer_decay_scales(params: PyTree, decay: float) -> PyTree:
  """Learning-rate multipliers decay^(L + 1 - layer) (BEiT/MAE layer-wise decay)."""
  ids, depth = layer_ids(params)
  return jax.tree.map(lambda i: float(decay) ** (depth + 1 - i), ids)
