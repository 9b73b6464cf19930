"""Published PyTorch checkpoints -> ordinary ecgjax encoder exports, checked key by key.

`convert` reads a checkpoint (torch needed only for that), maps its keys onto the encoder's
parameter tree, checks every path and shape against the model it names and writes an export
(`ecgjax/export.py` format) whose input contract is the source model's, so `finetune/` scripts
embed raw records with the right preprocessing. `convert_state_dict` does the same in memory on
NumPy arrays (no torch).

Nothing is ever left at its random initial value silently: a key the encoder needs and the
checkpoint lacks fails the conversion, listed with every unexpected and mis-shaped key, unless
the caller allows it by pattern (`allow_missing`); parts that are not the encoder (MAE decoder,
quantiser, classifier heads, BatchNorm a model does not apply) are dropped by name and listed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import dataclasses
import json
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ecgjax import models
from ecgjax import contract as contract_lib
from ecgjax import leads as leads_lib
from ecgjax.interop import ecg_fm as ecg_fm_lib
from ecgjax.interop import net1d as net1d_lib
from ecgjax.interop import st_mem as st_mem_lib
from ecgjax.interop import state as state_lib
from ecgjax.interop import torchvision_resnet as tv_lib
from ecgjax.errors import UserError

REPORT_FILE = "conversion_report.json"


class ConversionError(UserError, ValueError):
  """A checkpoint that does not fill the encoder; `report` says every key that is wrong."""

  def __init__(self, report: ConversionReport):
    super().__init__(report.summary())
    self.report = report


@dataclasses.dataclass
class ConversionReport:
  """What a conversion used, dropped and could not place (keys as the checkpoint names them)."""
  source: str
  variant: str = ""
  overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  converted: int = 0  # checkpoint keys that went into the encoder
  missing: list[str] = dataclasses.field(default_factory=list)  # needed, absent: fails
  allowed_missing: list[str] = dataclasses.field(default_factory=list)  # kept at random init
  unexpected: list[str] = dataclasses.field(default_factory=list)  # nothing uses them: fails
  shape_mismatch: list[str] = dataclasses.field(default_factory=list)  # fails
  problems: list[str] = dataclasses.field(default_factory=list)  # config/architecture: fails
  dropped: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> why (not encoder)
  ignored: list[str] = dataclasses.field(default_factory=list)  # removed by ignore_keys
  # Checkpoint entries beside the weights (epoch, metrics, optimizer and scheduler state,
  # fairseq's cfg / extra_state, ...): never weights, listed so nothing passes unseen.
  beside_weights: list[str] = dataclasses.field(default_factory=list)
  weights_at: str = ""  # where the state dict sat ('' = top level, 'state_dict', 'model')
  notes: list[str] = dataclasses.field(default_factory=list)

  @property
  def ok(self) -> bool:
    """True when nothing fails the conversion."""
    return not (self.missing or self.unexpected or self.shape_mismatch or self.problems)

  def to_dict(self) -> dict[str, Any]:
    """JSON-able dict (written beside the export as conversion_report.json)."""
    return {**dataclasses.asdict(self), "ok": self.ok}

  def summary(self) -> str:
    """Human-readable report: every failing key in full, dropped keys grouped by reason."""
    head = f"{self.source} checkpoint -> ecgjax ({self.variant or 'variant unknown'}"
    head += f", overrides {self.overrides})" if self.overrides else ")"
    lines = [head, f"  converted: {self.converted} checkpoint keys"
             + (f" (weights under {self.weights_at!r})" if self.weights_at else "")]
    for title, keys in (("MISSING (the encoder needs them; the checkpoint lacks them)",
                         self.missing),
                        ("UNEXPECTED (nothing in the encoder uses them)", self.unexpected),
                        ("SHAPE MISMATCH", self.shape_mismatch),
                        ("PROBLEMS", self.problems),
                        ("kept at RANDOM INIT (--allow-missing)", self.allowed_missing),
                        ("ignored (--ignore-keys)", self.ignored)):
      if keys:
        lines.append(f"  {title}: {len(keys)}")
        lines += [f"    {k}" for k in keys]
    by_reason: dict[str, list[str]] = {}
    for key, why in self.dropped.items():
      by_reason.setdefault(why, []).append(key)
    for why, keys in by_reason.items():
      shown = ", ".join(sorted(keys)[:4]) + (", ..." if len(keys) > 4 else "")
      lines.append(f"  dropped, {why}: {len(keys)} ({shown})")
    if self.beside_weights:
      lines.append(f"  ignored, not weights: {len(self.beside_weights)}")
      lines += [f"    {k}" for k in self.beside_weights]
    lines += [f"  note: {n}" for n in self.notes]
    if not self.ok:
      lines.append("  conversion FAILED: fix the checkpoint or --variant; to keep named "
                   "parameters at their random init on purpose, pass --allow-missing PATTERN")
    return "\n".join(lines)


@dataclasses.dataclass
class Conversion:
  """A converted encoder: params, its export description, input contract and report."""
  params: dict[str, Any]
  encoder: dict[str, Any]
  contract: Any  # contract_lib.InputContract, or data.ImagePreprocessing for image models
  report: ConversionReport
  export_dir: str | None = None  # where `convert` / `save_conversion` wrote it
  collections: dict[str, Any] = dataclasses.field(default_factory=dict)  # BN statistics


@dataclasses.dataclass
class _Read:
  """What a family's reader found in a state dict."""
  params: dict[str, Any]
  reader: state_lib.StateReader
  dropped: dict[str, str]
  fields: dict[str, Any]
  problems: list[str]
  in_leads: int | None
  stats: dict[str, Any] | None = None  # BatchNorm running statistics (batch_stats)
  random_init: tuple[str, ...] = ()  # param path regexes the source never has (kept at init)
  notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class _Family:
  model: str  # the export's "model"
  module: str  # registry name of the encoder module
  variants: tuple[str, ...]  # known sizes, the published one first
  preset: str  # contract preset of the input contract
  pooling: str  # what the embedding is
  read: Callable[[Mapping[str, Any], Mapping[str, Any]], _Read]
  fixed: tuple[tuple[str, Any], ...] = ()  # overrides every export of the family has
  modality: str = "signal"  # signal: (B, leads, T) input | image: (B, H, W, C)


def _read_st_mem(state, meta) -> _Read:
  del meta
  params, r, dropped, fields = st_mem_lib.read_encoder(state)
  return _Read(params, r, dropped, fields, [], None)


def _read_net1d(state, meta) -> _Read:
  del meta
  variables, r = net1d_lib.read_variables(state, use_bn=False, head=False)
  dropped = {k: "ECGFounder's classifier (dense): not part of the encoder"
             for k in state if k.startswith("dense.")}
  dropped.update({k: "BatchNorm the model does not apply (ECGFounder runs with BN off)"
                  for k in state if net1d_lib.is_bn_key(k)})
  fields: dict[str, Any] = {}
  stem = state.get("first_conv.conv.weight")
  in_leads = None
  if stem is not None and np.ndim(stem) == 3:
    fields["stem_filters"], in_leads, fields["kernel"] = (int(n) for n in np.shape(stem))
  filters, blocks = [], []
  for s in range(state_lib.count_indexed(state, r"stage_list\.(\d+)\.")):
    blocks.append(state_lib.count_indexed(state, rf"stage_list\.{s}\.block_list\.(\d+)\."))
    key = f"stage_list.{s}.block_list.0"
    conv1, conv2 = state.get(f"{key}.conv1.conv.weight"), state.get(f"{key}.conv2.conv.weight")
    conv3 = state.get(f"{key}.conv3.conv.weight")
    if conv3 is None or conv1 is None or conv2 is None:
      continue
    filters.append(int(np.shape(conv3)[0]))
    mid = int(np.shape(conv1)[0])
    if s == 0:
      fields["ratio"] = mid / filters[-1]
    if "groups_width" not in fields and np.shape(conv2)[1] < mid:  # grouped: in/groups = width
      fields["groups_width"] = int(np.shape(conv2)[1])
  if blocks:
    fields["blocks"] = tuple(blocks)
  if filters and len(filters) == len(blocks):
    fields["filters"] = tuple(filters)
  return _Read(variables["params"], r, dropped, fields, [], in_leads)


def _read_ecg_fm(state, meta) -> _Read:
  params, r, dropped, fields, problems = ecg_fm_lib.read_encoder(state, meta)
  conv0 = r.state.get(ecg_fm_lib.ANCHOR)
  return _Read(params, r, dropped, fields, problems,
               None if conv0 is None else int(np.shape(conv0)[1]))


def _read_torchvision(state, meta) -> _Read:
  params, stats, r, fields = tv_lib.read_variables(state, channels=int(meta.get("channels", 1)))
  notes = [tv_lib.PIXELS_NOTE]
  if meta.get("spatial_attention", True):
    notes.append(tv_lib.ATTENTION_NOTE)
  return _Read(params, r, tv_lib.dropped_keys(state), fields, [], None, stats=stats,
               random_init=(r"^body/attention\d+/",), notes=tuple(notes))


FAMILIES: dict[str, _Family] = {
    "st-mem": _Family("st_mem", "st_mem_encoder", ("B/75", "S/75", "L/75", "mu"), "st_mem",
                      "mean of non-SEP tokens, then the final LayerNorm", _read_st_mem),
    "ecgfounder": _Family("net1d", "net1d", ("ecgfounder", "8m", "mu"), "ecgfounder",
                          "mean over time of the last block (ECGFounder's features before "
                          "its classifier)", _read_net1d,
                          fixed=(("num_classes", 0),)),  # the encoder: no head
    "ecg-fm": _Family("ecg_fm", "ecg_fm_encoder", ("base", "small", "mu"), "ecg_fm",
                      "per 5 s segment: sum over frames / nonzero count per feature "
                      "(scripts/embs.py); a record = the mean over its segments", _read_ecg_fm,
                      fixed=(("pooling", "feature_nonzero_mean"),)),
    # ImageNet ResNets (torchvision's layout) as EIANet's image encoder; num_classes=0: no
    # head, the pooled features are the embedding.
    "torchvision-resnet50": _Family("resnet2d", "resnet2d", ("resnet2d50", "resnet2d18", "mu"),
                                    "eianet", "global mean of the last stage (torchvision's "
                                    "avgpool, before fc)", _read_torchvision,
                                    fixed=(("num_classes", 0),), modality="image"),
}
SOURCES = tuple(FAMILIES)
# What is known of the published weights' terms; a converted export's model card states it.
LICENCES = {
    "st-mem": "CC BY-NC 4.0: the official ST-MEM weights (and code) are licensed for "
              "non-commercial use only, with further restrictions in their repository; this "
              "export, converted from them, carries the same terms.",
}


def _module_fields(module: Any, names: Sequence[str]) -> dict[str, Any]:
  out = {}
  for k in names:
    v = getattr(module, k)
    out[k] = tuple(v) if isinstance(v, (list, tuple)) else v
  return out


def _pick_variant(fam: _Family, fields: Mapping[str, Any], variant: str | None,
                  report: ConversionReport) -> tuple[str, dict[str, Any]]:
  """(variant, overrides): the given one as is, else the known size closest to the fields read
  off the checkpoint, with the fields that differ as overrides."""
  fixed = dict(fam.fixed)
  if variant is not None:
    have = _module_fields(models.build_model(fam.module, variant, **fixed), list(fields))
    for k, v in fields.items():
      if have[k] != v:
        report.problems.append(f"the checkpoint has {k}={v}, --variant {variant} has {have[k]}")
    return variant, fixed

  def differing(name: str) -> dict[str, Any]:
    have = _module_fields(models.build_model(fam.module, name, **fixed), list(fields))
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in fields.items()
            if have[k] != v}

  # The closest known size (fewest fields to override; the published one on ties).
  name = min(fam.variants, key=lambda n: len(differing(n)))
  overrides = differing(name)
  if overrides:
    report.notes.append(f"no known {fam.model} size matches the checkpoint exactly; using "
                        f"{name} with {overrides}")
  return name, {**fixed, **overrides}


def _contract(fam: _Family, in_leads: int | None, leads: Sequence[str] | None,
              module: Any, report: ConversionReport, channels: int = 1) -> Any:
  if fam.modality == "image":
    from ecgjax.data import images  # pylint: disable=g-import-not-at-top
    # EIANet's preprocessing for one channel; RGB input is the raw picture (no stages).
    return images.preset("eianet") if channels == 1 else images.preset("raw")
  if leads is None:
    if in_leads in (None, 12):
      leads = leads_lib.LEADS_12
    elif in_leads == 1:
      leads = ("I",)
      report.notes.append("a 1-lead model: its input contract takes lead I (pass --leads to "
                          "name another)")
    else:
      raise ValueError(f"the checkpoint's model takes {in_leads} input leads; name them with "
                       "--leads (e.g. --leads I,II,V1)")
  pp = contract_lib.preset(fam.preset, leads_lib.parse_leads(leads))
  if fam.model == "st_mem" and module.seq_len != pp.samples:
    pp = dataclasses.replace(pp, samples=int(module.seq_len))
  return pp


def _matches(patterns: Sequence[str], *names: str) -> bool:
  return any(re.search(p, n) for p in patterns for n in names if n)


def convert_state_dict(source: str, checkpoint: Mapping[str, Any], *,
                       variant: str | None = None, allow_missing: Sequence[str] = (),
                       ignore_keys: Sequence[str] = (), leads: Sequence[str] | None = None,
                       seed: int = 0, channels: int = 1,
                       spatial_attention: bool = True) -> Conversion:
  """Map a loaded checkpoint (NumPy arrays: a bare state dict, or any trainer's file around one,
  found by structure, see `state.unwrap_checkpoint`) onto the `source` encoder ("st-mem" |
  "ecgfounder" | "ecg-fm"). Entries beside the weights are listed in `report.beside_weights`.

  variant: a known size; None reads it off the shapes. allow_missing: regexes over checkpoint
  keys or param paths that may stay at their random init (seed). ignore_keys: regexes over
  checkpoint keys to drop before mapping. leads: the input leads (default: 12, or lead I for a
  1-lead model). Image models (torchvision-resnet50): `channels` 1 (RGB filters summed) or 3,
  `spatial_attention` adds EIANet's gates at their random init (listed in the report). Raises ConversionError (with the report) unless every encoder parameter was
  filled from the checkpoint or allowed, and every key was used or dropped by name.
  """
  if source not in FAMILIES:
    raise ValueError(f"unknown source {source!r}; known: {', '.join(SOURCES)}")
  fam = FAMILIES[source]
  state, path, beside = state_lib.unwrap_checkpoint(checkpoint)
  meta = {k: v for k, v in checkpoint.items() if k in ("cfg", "args")}
  if fam.modality == "image":
    fam = dataclasses.replace(fam, fixed=fam.fixed + (("spatial_attention",
                                                       bool(spatial_attention)),))
    meta.update(channels=int(channels), spatial_attention=bool(spatial_attention))
  report = ConversionReport(source)
  report.weights_at, report.beside_weights = ".".join(path), beside
  report.ignored = sorted(k for k in state if _matches(ignore_keys, k))
  state = {k: v for k, v in state.items() if k not in set(report.ignored)}

  read = fam.read(state, meta)
  r = read.reader
  report.problems += read.problems
  report.notes += list(read.notes)
  report.dropped = dict(sorted(read.dropped.items()))
  report.unexpected = sorted(set(state) - r.used - set(read.dropped))
  variant, overrides = _pick_variant(fam, read.fields, variant, report)
  report.variant, report.overrides = variant, overrides
  module = models.build_model(fam.module, variant, **overrides)
  contract = _contract(fam, read.in_leads, leads, module, report, channels)
  if fam.modality == "image":  # a CNN's weights do not depend on the picture size
    x = jnp.zeros((1, 64, 64, contract.channels), jnp.float32)
    shape_text = f"{contract.channels}-channel images"
  else:
    x = jnp.zeros((1, len(contract.leads), contract.samples), jnp.float32)
    shape_text = f"{len(contract.leads)} leads x {contract.samples} samples"
  try:
    abstract = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(seed), x))
  except (ValueError, TypeError) as e:
    report.problems.append(f"{fam.module} {variant} {overrides} cannot be built on "
                           f"{shape_text}: {e}")
    raise ConversionError(report) from None
  template = state_lib.flatten(abstract["params"])
  # Parameters the source never has (EIANet's attention on an ImageNet net) are allowed by
  # the family itself; any other hole still needs --allow-missing.
  allow_missing = tuple(allow_missing) + (read.random_init if spatial_attention else ())

  flat = state_lib.flatten(read.params)
  missing_keys = list(dict.fromkeys(r.missing))
  holes = [p for p, v in flat.items() if v is None and p in template]
  holes += [p for p in template if p not in flat]
  for p in [p for p in flat if p not in template]:
    if flat[p] is not None:
      report.unexpected.append(f"{r.origin.get(id(flat[p]), p)} (the model has no {p})")
  for p, v in flat.items():
    if v is not None and p in template and np.shape(v) != template[p].shape:
      report.shape_mismatch.append(f"{r.origin.get(id(v), p)}: checkpoint {np.shape(v)} -> "
                                   f"{p} {template[p].shape} in the model")
  structural = [f"{p} (model parameter with no checkpoint key)" for p in template
                if p not in flat]
  for name in missing_keys + structural:
    (report.allowed_missing if _matches(allow_missing, name) else report.missing).append(name)
  if report.allowed_missing and not report.missing:
    # Every hole is allowed: fill exactly those from the model's init, and say so.
    init = state_lib.flatten(jax.jit(module.init)(jax.random.PRNGKey(seed), x)["params"])
    for p in holes:
      flat[p] = np.asarray(init[p])
  stats = _check_stats(read.stats, abstract, r, report)
  report.converted = len(r.used - set(read.dropped))
  if not report.ok:
    raise ConversionError(report)
  params = state_lib.unflatten({p: flat[p] for p in template})
  encoder = {
      "model": fam.model, "variant": variant, "module": fam.module, "overrides": overrides,
      "embedding": {"dim": _embedding_dim(module), "pooling": fam.pooling},
  }
  if fam.model == "ecg_fm":
    encoder["embedding"]["frames"] = contract.samples // 16
  return Conversion(params, encoder, contract, report, collections=stats)


def _check_stats(stats: dict[str, Any] | None, abstract: Mapping[str, Any],
                 r: state_lib.StateReader, report: ConversionReport) -> dict[str, Any]:
  """The BatchNorm statistics read (as {"batch_stats": ...}), every path and shape checked
  against the model's; problems go to the report."""
  want = abstract.get("batch_stats")
  if not want:
    return {}
  have = state_lib.flatten(stats or {})
  want_flat = state_lib.flatten(want)
  for p, spec in want_flat.items():
    v = have.get(p)
    if v is None:
      if p in have:  # the reader recorded the checkpoint key as missing
        continue
      report.missing.append(f"batch_stats/{p} (model statistics with no checkpoint key)")
    elif np.shape(v) != spec.shape:
      report.shape_mismatch.append(f"{r.origin.get(id(v), p)}: checkpoint {np.shape(v)} -> "
                                   f"batch_stats/{p} {spec.shape} in the model")
  for p in sorted(set(have) - set(want_flat)):
    if have[p] is not None:
      report.unexpected.append(f"{r.origin.get(id(have[p]), p)} (the model has no "
                               f"batch_stats/{p})")
  return {"batch_stats": state_lib.unflatten({p: have[p] for p in want_flat if p in have})}


def _embedding_dim(module: Any) -> int:
  if hasattr(module, "stage_sizes"):  # a ResNet: the last stage's channels
    expansion = 4 if module.block == "bottleneck" else 1
    return int(module.width * 2 ** (len(module.stage_sizes) - 1) * expansion)
  if hasattr(module, "width"):
    return int(module.width)
  return int(module.filters[-1])


def save_conversion(conversion: Conversion, out_dir: str, *,
                    checkpoint_path: str | None = None) -> str:
  """Writes the export (config.json, params.safetensors, ...) and conversion_report.json; its
  path."""
  from ecgjax import export as export_lib  # pylint: disable=g-import-not-at-top
  rep = conversion.report
  origin: dict[str, Any] = {"source": rep.source, "variant": rep.variant,
                            "converted_keys": rep.converted,
                            "kept_at_random_init": rep.allowed_missing,
                            "dropped_keys": len(rep.dropped)}
  if rep.source in LICENCES:
    origin["licence"] = LICENCES[rep.source]
  if checkpoint_path is not None:
    from ecgjax.interop import torch_io  # pylint: disable=g-import-not-at-top
    origin["checkpoint"] = os.path.abspath(checkpoint_path)
    origin["checkpoint_sha256"] = torch_io.sha256_of(checkpoint_path)
  path = export_lib.save_export(out_dir, conversion.params, conversion.encoder,
                                conversion.contract.to_dict(),
                                training={"converted_from": origin},
                                collections=conversion.collections)
  with open(os.path.join(path, REPORT_FILE), "w") as f:
    json.dump(rep.to_dict(), f, indent=2, sort_keys=True)
  conversion.export_dir = path
  return path


def convert(source: str, checkpoint_path: str, out_dir: str | None, *,
            variant: str | None = None, allow_missing: Sequence[str] = (),
            ignore_keys: Sequence[str] = (), leads: Sequence[str] | None = None,
            channels: int = 1, spatial_attention: bool = True) -> Conversion:
  """Reads a PyTorch checkpoint file safely (torch needed), converts it (see
  `convert_state_dict`) and writes an ecgjax export to out_dir (None: check only).
  Raises ConversionError (nothing written), or torch_io.CheckpointError for unreadable files."""
  from ecgjax.interop import torch_io  # pylint: disable=g-import-not-at-top
  checkpoint = torch_io.load_checkpoint(checkpoint_path)
  if not isinstance(checkpoint, Mapping):
    raise torch_io.CheckpointError(f"{checkpoint_path} holds a {type(checkpoint).__name__}, "
                                   "not a state dict or a dict around one")
  conversion = convert_state_dict(source, checkpoint, variant=variant,
                                  allow_missing=allow_missing, ignore_keys=ignore_keys,
                                  leads=leads, channels=channels,
                                  spatial_attention=spatial_attention)
  if out_dir is not None:
    save_conversion(conversion, out_dir, checkpoint_path=checkpoint_path)
  return conversion
