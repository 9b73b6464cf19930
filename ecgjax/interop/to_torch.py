"""ecgjax encoder exports -> the files the original PyTorch code loads (ST-MEM, ECGFounder, ECG-FM).

The inverse of the importers: every tensor is laid out as the reference module registers it
(torch Linear (out, in), Conv1d (out, in/groups, k), one ParameterList row per lead, ...), so an
encoder pretrained or fine-tuned with ecgjax loads there with `load_state_dict(strict=True)`.
Each state dict is checked before it is written: read back through the importer, it must give
the export's parameters bit for bit (`RoundTripError` otherwise), so the two directions cannot
drift apart. Modules the reference registers but ecgjax never creates (Net1D's BatchNorm with BN
off, a classifier head the export lacks) are written at a stated initial value and listed.

Only writing the file needs torch (`torch.save`); the state dicts themselves are NumPy.
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import os
import re
from typing import Any

import numpy as np

from ecgjax.errors import UserError
from ecgjax.interop import ecg_fm as ecg_fm_lib
from ecgjax.interop import net1d as net1d_lib
from ecgjax.interop import st_mem as st_mem_lib
from ecgjax.interop import state as state_lib

# Target code -> the export encoder module it can take.
TARGETS: dict[str, str] = {"st-mem": "st_mem_encoder", "ecgfounder": "net1d",
                           "ecg-fm": "ecg_fm_encoder"}
# Where a fine-tuned fairseq-signals classifier keeps its encoder: ECG-FM's released
# checkpoints use the first, fairseq-signals' current ecg_transformer_classifier the second.
ECG_FM_PREFIXES = ("encoder.w2v_model.", "encoder.")


class ExportToTorchError(UserError, ValueError):
  """An export that the target code cannot represent, or a missing option; says which."""


class RoundTripError(ExportToTorchError):
  """The written state dict does not read back to the export's parameters (a writer bug)."""


@dataclasses.dataclass
class TorchExport:
  """What was written: the object torch.save got (NumPy leaves), and what to tell the user."""
  target: str
  checkpoint: dict[str, Any]
  state: dict[str, np.ndarray]  # the state dict inside `checkpoint`
  initialised: dict[str, str] = dataclasses.field(default_factory=dict)  # key -> what value
  load_hint: str = ""
  path: str | None = None

  def summary(self) -> str:
    """Human-readable account of the file."""
    n = sum(int(np.size(v)) for v in self.state.values())
    lines = [f"{self.target}: {len(self.state)} tensors, {n:,} values"
             + (f" -> {self.path}" if self.path else "")]
    by_why: dict[str, list[str]] = {}
    for key, why in self.initialised.items():
      by_why.setdefault(why, []).append(key)
    for why, keys in by_why.items():
      shown = ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")
      lines.append(f"  not from the export, {why}: {len(keys)} ({shown})")
    lines.append("  round trip: reading it back gives the export's parameters exactly")
    if self.load_hint:
      lines.append(f"  load with: {self.load_hint}")
    return "\n".join(lines)


class _Writer:
  """Builds a torch-layout state dict from Flax parameter dicts."""

  def __init__(self):
    self.state: dict[str, np.ndarray] = {}
    self.initialised: dict[str, str] = {}

  def put(self, key: str, value: Any) -> None:
    """One float32 tensor under `key`."""
    if key in self.state:
      raise ValueError(f"{key} written twice")
    self.state[key] = np.ascontiguousarray(np.asarray(value, np.float32))

  def linear(self, key: str, p: Mapping[str, Any]) -> None:
    """Flax Dense {kernel (in, out), bias} -> torch Linear weight (out, in), bias."""
    self.put(f"{key}.weight", np.asarray(p["kernel"]).T)
    self.put(f"{key}.bias", p["bias"])

  def norm(self, key: str, p: Mapping[str, Any]) -> None:
    """Flax LayerNorm/GroupNorm {scale, bias} -> torch weight, bias."""
    self.put(f"{key}.weight", p["scale"])
    self.put(f"{key}.bias", p["bias"])

  def conv(self, key: str, kernel: Any) -> None:
    """Flax Conv kernel (k, in/groups, out) -> torch Conv1d weight (out, in/groups, k)."""
    self.put(key, np.asarray(kernel).transpose(2, 1, 0))

  def fresh(self, key: str, value: np.ndarray, why: str) -> None:
    """A tensor the export does not hold, at a stated value."""
    self.state[key] = value
    self.initialised[key] = why


def _indexed(params: Mapping[str, Any], pattern: str) -> list[int]:
  return sorted(int(m.group(1)) for k in params if (m := re.fullmatch(pattern, k)))


# ----------------------------------------------------------------------------------- ST-MEM


def st_mem_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """STMEMEncoder params -> the state dict of ST-MEM's encoder (ST_MEM_ViT, no head)."""
  w = _Writer()
  w.norm("to_patch_embedding.1", params["patch_in_norm"])  # .0 is the patchify Rearrange
  w.linear("to_patch_embedding.2", params["patch_embed"])
  w.norm("to_patch_embedding.3", params["patch_out_norm"])
  w.put("pos_embedding", np.asarray(params["pos_embedding"])[None])  # torch keeps (1, rows, D)
  w.put("sep_embedding", params["sep_embedding"])
  for i, row in enumerate(np.asarray(params["lead_embedding"])):  # one ParameterList entry each
    w.put(f"lead_embeddings.{i}", row)
  for i in _indexed(params, r"block_(\d+)"):
    b, key = params[f"block_{i}"], f"block{i}"
    w.norm(f"{key}.attn.norm", b["attn_norm"])
    w.linear(f"{key}.attn.fn.to_qkv", b["attn"]["qkv"])
    w.linear(f"{key}.attn.fn.to_out.0", b["attn"]["out"])
    w.norm(f"{key}.ff.norm", b["mlp_norm"])
    w.linear(f"{key}.ff.fn.net.0", b["mlp"]["fc1"])
    w.linear(f"{key}.ff.fn.net.3", b["mlp"]["fc2"])
  w.norm("norm", params["norm"])
  return w.state


def _st_mem(export: Any, options: Mapping[str, Any]) -> TorchExport:
  del options
  module = export.module
  if int(module.head_dim) != st_mem_lib.HEAD_DIM:
    raise ExportToTorchError(f"{export.directory}: head_dim {module.head_dim}; ST-MEM's "
                             f"attention has {st_mem_lib.HEAD_DIM} channels per head, always")
  state = st_mem_state_dict(export.params)
  back = st_mem_lib.params_from_torch_state_dict(state, full_model=False)
  _check_same(export.params, back, "ST-MEM")
  hint = (f"ST_MEM_ViT(seq_len={module.seq_len}, patch_size={module.patch_size}, "
          f"num_leads={module.num_leads}, width={module.width}, depth={module.depth}, "
          f"mlp_dim={module.mlp_dim}, heads={module.num_heads}, dim_head={module.head_dim})"
          ".load_state_dict(torch.load(PATH, weights_only=True), strict=True)")
  return TorchExport("st-mem", state, state, load_hint=hint)


# ------------------------------------------------------------------------------------ Net1D


def _bn(w: _Writer, key: str, channels: int, scale_bias: Mapping[str, Any] | None,
        stats: Mapping[str, Any] | None, why: str) -> None:
  """A reference BatchNorm1d: the export's when it has one, else torch's initial values."""
  if scale_bias is not None and stats is not None:
    w.put(f"{key}.weight", scale_bias["scale"])
    w.put(f"{key}.bias", scale_bias["bias"])
    w.put(f"{key}.running_mean", stats["mean"])
    w.put(f"{key}.running_var", stats["var"])
  else:
    for leaf, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0),
                        ("running_var", 1.0)):
      w.fresh(f"{key}.{leaf}", np.full((channels,), value, np.float32), why)
  w.fresh(f"{key}.num_batches_tracked", np.zeros((), np.int64), "a step counter, 0")


def net1d_state_dict(variables: Mapping[str, Any], *, num_labels: int | None = None
                     ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
  """Net1D variables -> (ECGFounder's Net1D state dict, keys not from the export -> why).

  The reference registers every BatchNorm even with BN off (and the first block's bn1, never
  applied); those get torch's initial values. Its `dense` classifier is the export's head, or
  with `num_labels` a new one at zero (an export that is an encoder has none)."""
  p, stats = variables["params"], variables.get("batch_stats", {})
  w = _Writer()
  unused = "BatchNorm the reference registers but does not apply (torch's initial values)"
  stem = p["stem"]["conv"]
  w.conv("first_conv.conv.weight", stem["kernel"])
  w.put("first_conv.conv.bias", stem["bias"])
  _bn(w, "first_bn", np.shape(stem["kernel"])[2], p.get("stem_bn"), stats.get("stem_bn"),
      unused)
  blocks = sorted((int(m.group(1)), int(m.group(2))) for k in p
                  if (m := re.fullmatch(r"stage(\d+)_block(\d+)", k)))
  for s, b in blocks:
    name, key = f"stage{s}_block{b}", f"stage_list.{s}.block_list.{b}"
    blk, bst = p[name], stats.get(name, {})
    for i in (1, 2, 3):
      kernel = np.asarray(blk[f"conv{i}"]["conv"]["kernel"])
      # bn1 normalises the block's input, bn2 / bn3 the middle channels.
      channels = kernel.shape[1] if i == 1 else np.shape(blk["conv1"]["conv"]["kernel"])[2]
      _bn(w, f"{key}.bn{i}", channels, blk.get(f"bn{i}"), bst.get(f"bn{i}"), unused)
      w.conv(f"{key}.conv{i}.conv.weight", kernel)
      w.put(f"{key}.conv{i}.conv.bias", blk[f"conv{i}"]["conv"]["bias"])
    w.linear(f"{key}.se_fc1", blk["se_fc1"])
    w.linear(f"{key}.se_fc2", blk["se_fc2"])
  if "head" in p:
    if num_labels is not None and num_labels != np.shape(p["head"]["kernel"])[1]:
      raise ExportToTorchError(f"--num-labels {num_labels}, but the export's head has "
                               f"{np.shape(p['head']['kernel'])[1]} outputs")
    w.linear("dense", p["head"])
  elif num_labels is None:
    raise ExportToTorchError("the export is an encoder (no classifier head) and ECGFounder's "
                             "Net1D always ends in one (dense): pass --num-labels N to add "
                             "one at zero, to be fine-tuned there")
  else:
    width = np.shape(p[f"stage{blocks[-1][0]}_block{blocks[-1][1]}"]["conv3"]["conv"]
                     ["kernel"])[2]
    new = f"a new classifier ({num_labels} labels) at zero"
    w.fresh("dense.weight", np.zeros((num_labels, width), np.float32), new)
    w.fresh("dense.bias", np.zeros((num_labels,), np.float32), new)
  return w.state, w.initialised


def _net1d(export: Any, options: Mapping[str, Any]) -> TorchExport:
  variables = export.variables
  state, initialised = net1d_state_dict(variables, num_labels=options.get("num_labels"))
  use_bn = "batch_stats" in variables
  has_head = "head" in variables["params"]
  back, r = net1d_lib.read_variables(state, use_bn=use_bn, head=has_head)
  if r.missing:
    raise RoundTripError(f"Net1D state dict lacks {r.missing}")
  _check_same(variables["params"], back["params"], "Net1D")
  if use_bn:
    _check_same(variables["batch_stats"], back["batch_stats"], "Net1D batch_stats")
  m = export.module
  leads = int(np.shape(variables["params"]["stem"]["conv"]["kernel"])[1])
  classes = int(np.shape(state["dense.weight"])[0])
  hint = (f"Net1D(in_channels={leads}, base_filters={m.stem_filters}, ratio={m.ratio}, "
          f"filter_list={list(m.filters)}, m_blocks_list={list(m.blocks)}, "
          f"kernel_size={m.kernel}, stride={m.stride}, groups_width={m.groups_width}, "
          f"verbose=False, use_bn={use_bn}, use_do={bool(m.use_dropout)}, "
          f"n_classes={classes}).load_state_dict(torch.load(PATH, weights_only=True)"
          "['state_dict'], strict=True)")
  return TorchExport("ecgfounder", {"state_dict": state}, state, initialised, hint)


# ----------------------------------------------------------------------------------- ECG-FM


def ecg_fm_encoder_state_dict(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """ECGFMEncoder params -> fairseq-signals' encoder keys (no prefix, no pretraining heads)."""
  w = _Writer()
  fe = params["feature_extractor"]
  for i in _indexed(fe, r"conv_(\d+)"):
    w.conv(f"feature_extractor.conv_layers.{i}.0.weight", fe[f"conv_{i}"]["kernel"])
  w.norm("feature_extractor.conv_layers.0.2", fe["group_norm"])
  w.norm("layer_norm", params["layer_norm"])
  w.linear("post_extract_proj", params["post_extract_proj"])
  pos = params["conv_pos"]
  # ecgjax keeps the weight norm's (g, v) in torch's layout: they map 1:1, unfolded, under
  # the names torch.nn.utils.weight_norm (fairseq's) registers.
  w.put(f"{ecg_fm_lib.POS_CONV}.weight_g", pos["g"])
  w.put(f"{ecg_fm_lib.POS_CONV}.weight_v", pos["v"])
  w.put(f"{ecg_fm_lib.POS_CONV}.bias", pos["bias"])
  w.norm("encoder.layer_norm", params["encoder_layer_norm"])
  for i in _indexed(params, r"layers_(\d+)"):
    layer, key = params[f"layers_{i}"], f"encoder.layers.{i}"
    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
      w.linear(f"{key}.self_attn.{name}", layer["self_attn"][name])
    w.norm(f"{key}.self_attn_layer_norm", layer["self_attn_layer_norm"])
    w.linear(f"{key}.fc1", layer["fc1"])
    w.linear(f"{key}.fc2", layer["fc2"])
    w.norm(f"{key}.final_layer_norm", layer["final_layer_norm"])
  return w.state


def ecg_fm_cfg(module: Any, in_leads: int, num_labels: int, fs: float) -> dict[str, Any]:
  """A fairseq-signals config (plain dicts) that builds this classifier: ecg_transformer_
  classifier with the encoder's sizes, dropouts off, no pretrained model to fetch."""
  model = {
      "_name": "ecg_transformer_classifier", "num_labels": int(num_labels),
      "model_path": None, "no_pretrained_weights": True, "freeze_finetune_updates": 0,
      "encoder_layers": int(module.depth), "encoder_embed_dim": int(module.width),
      "encoder_ffn_embed_dim": int(module.mlp_dim),
      "encoder_attention_heads": int(module.num_heads), "layer_norm_first": False,
      "activation_fn": "gelu", "extractor_mode": "default",
      "conv_feature_layers": f"[({int(module.conv_channels)}, 2, 2)] * 4",
      "conv_bias": False, "in_d": int(in_leads), "conv_pos": int(module.conv_pos_kernel),
      "conv_pos_groups": int(module.conv_pos_groups), "feature_grad_mult": 0.0,
      "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.0,
      "dropout_input": 0.0, "dropout_features": 0.0, "encoder_layerdrop": 0.0,
      "final_dropout": 0.0, "apply_mask": False, "mask_prob": 0.0, "mask_channel_prob": 0.0,
      "all_gather": False,
  }
  task = {"_name": "ecg_classification", "num_labels": int(num_labels),
          "sample_rate": int(round(fs)), "normalize": False, "filter": False}
  return {"_name": None, "common": {}, "task": task, "model": model,
          "criterion": {"_name": "binary_cross_entropy"}}


def _ecg_fm(export: Any, options: Mapping[str, Any]) -> TorchExport:
  num_labels, prefix = options.get("num_labels"), options.get("prefix", ECG_FM_PREFIXES[0])
  if prefix not in ECG_FM_PREFIXES:
    raise ExportToTorchError(f"encoder prefix {prefix!r}: one of {', '.join(ECG_FM_PREFIXES)}")
  if num_labels is None:
    raise ExportToTorchError("the ECG-FM file is fairseq-signals' fine-tuning classifier "
                             "(ecg_transformer_classifier), whose `proj` head the export "
                             "lacks: pass --num-labels N (the head starts at zero)")
  module = export.module
  enc = ecg_fm_encoder_state_dict(export.params)
  in_leads = int(np.shape(export.params["feature_extractor"]["conv_0"]["kernel"])[1])
  w = _Writer()
  for k, v in enc.items():
    w.state[prefix + k] = v
  new = f"the classifier head ({num_labels} labels) at zero, to be fine-tuned"
  w.fresh("proj.weight", np.zeros((num_labels, int(module.width)), np.float32), new)
  w.fresh("proj.bias", np.zeros((num_labels,), np.float32), new)
  cfg = ecg_fm_cfg(module, in_leads, num_labels, export.contract.fs)
  back, r, _, fields, problems = ecg_fm_lib.read_encoder(w.state, {"cfg": cfg})
  if r.missing or problems or fields.get("num_heads") != module.num_heads:
    raise RoundTripError(f"ECG-FM checkpoint does not read back: missing {r.missing}, "
                         f"config problems {problems}")
  _check_same(export.params, back, "ECG-FM")
  checkpoint = {"args": None, "cfg": cfg, "model": w.state, "criterion": None,
                "optimizer_history": [], "task_state": {}, "extra_state": None,
                "last_optimizer_state": None,
                "ecgjax": {"export": os.path.basename(export.directory),
                           "encoder_prefix": prefix}}
  hint = ("fairseq-signals: build cfg['model'] (ecg_transformer_classifier) and "
          "model.load_state_dict(ckpt['model'], strict=True); ECG-FM's own loaders read it "
          "as a fine-tuned checkpoint")
  return TorchExport("ecg-fm", checkpoint, w.state, w.initialised, hint)


# ------------------------------------------------------------------------------------ shared


def _check_same(have: Any, back: Any, what: str) -> None:
  """Every leaf of `back` equal, bit for bit, to `have` at the same path, and no path apart."""
  a, b = state_lib.flatten(have), state_lib.flatten(back)
  if set(a) != set(b):
    raise RoundTripError(f"{what}: the written state dict reads back with different "
                         f"parameters: only in the export {sorted(set(a) - set(b))[:5]}, only "
                         f"read back {sorted(set(b) - set(a))[:5]}")
  bad = [p for p in a if np.shape(a[p]) != np.shape(b[p])
         or not np.array_equal(np.asarray(a[p], np.float32), np.asarray(b[p], np.float32))]
  if bad:
    raise RoundTripError(f"{what}: these parameters do not read back exactly: {bad[:5]}")


_WRITERS = {"st-mem": _st_mem, "ecgfounder": _net1d, "ecg-fm": _ecg_fm}


def export_to_torch(export: Any, target: str, *, num_labels: int | None = None,
                    prefix: str = ECG_FM_PREFIXES[0]) -> TorchExport:
  """The checkpoint object for `target` from a loaded export (NumPy leaves; no torch)."""
  if target not in TARGETS:
    raise ExportToTorchError(f"unknown target {target!r}; known: {', '.join(TARGETS)}")
  module = export.config["encoder"]["module"]
  if module != TARGETS[target]:
    fits = [t for t, m in TARGETS.items() if m == module]
    raise ExportToTorchError(
        f"{export.directory} holds a {export.config.get('model', module)} encoder "
        f"({module}); --to {target} needs {TARGETS[target]}"
        + (f"; this one goes --to {fits[0]}" if fits else
           "; it has no PyTorch original to go back to"))
  if num_labels is not None and num_labels < 1:
    raise ExportToTorchError(f"--num-labels {num_labels}: at least 1")
  return _WRITERS[target](export, {"num_labels": num_labels, "prefix": prefix})


def _to_torch(obj: Any, torch) -> Any:
  if isinstance(obj, np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(obj))
  if isinstance(obj, Mapping):
    return {k: _to_torch(v, torch) for k, v in obj.items()}
  return obj


def write(export_dir: str, target: str, out_path: str, **options: Any) -> TorchExport:
  """Loads the export, writes `target`'s checkpoint with torch.save and reads it back with
  torch.load(weights_only=True) (what the field's loaders use) before returning."""
  from ecgjax import export as export_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.interop import torch_io  # pylint: disable=g-import-not-at-top
  exp = export_lib.load_export(export_dir)
  result = export_to_torch(exp, target, **options)
  torch = torch_io.import_torch()
  out_dir = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(out_dir, exist_ok=True)
  tmp = out_path + ".tmp"
  torch.save(_to_torch(result.checkpoint, torch), tmp)
  loaded = torch_io.load_checkpoint(tmp)
  state, _, _ = state_lib.unwrap_checkpoint(loaded)
  if set(state) != set(result.state):
    os.remove(tmp)
    raise RoundTripError(f"{out_path}: torch.load gives back other keys than were written")
  os.replace(tmp, out_path)
  result.path = out_path
  return result
