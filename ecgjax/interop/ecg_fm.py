"""ECG-FM fairseq-signals checkpoints (as NumPy state dicts) -> ecgjax ECGFMEncoder params.

Key names follow SPEC.md section 8. A pretraining checkpoint holds the encoder at top level
(`feature_extractor.conv_layers.*`, `layer_norm`, `post_extract_proj`, `conv_pos.pos_conv.0.*`,
`encoder.layer_norm`, `encoder.layers.{i}.*`) next to the pretraining heads (`mask_emb`,
`quantizer.*`, `project_q`, `final_proj`); a fine-tuned one nests all of it under `encoder.` and
adds its classifier `proj`. The positional convolution's weight norm comes in three spellings:
`weight_g`/`weight_v` (torch.nn.utils.weight_norm), `parametrizations.weight.original0/1`
(torch.nn.utils.parametrizations.weight_norm) or a plain folded `weight`.
"""

from collections.abc import Mapping
import re
from typing import Any

import numpy as np

from ecgjax.interop import state as state_lib

Params = dict[str, Any]

# The first key of every ECG-FM encoder: finds the encoder's prefix ('' or 'encoder.').
ANCHOR = "feature_extractor.conv_layers.0.0.weight"
POS_CONV = "conv_pos.pos_conv.0"
# (g, v) key suffixes of the weight-norm spellings, oldest first.
WEIGHT_NORM_SPELLINGS = (("weight_g", "weight_v"),
                         ("parametrizations.weight.original0", "parametrizations.weight.original1"))
# Checkpoint parts that are not the encoder (matched after the encoder prefix is removed, or
# on the whole key for the parts outside it): dropped on purpose, and listed.
NOT_ENCODER: tuple[tuple[str, str], ...] = (
    (r"^mask_emb$", "mask embedding (pretraining only)"),
    (r"^quantizer\.", "quantiser (pretraining only)"),
    (r"^project_q\.", "target projection (pretraining only)"),
    (r"^final_proj\.", "prediction projection (pretraining only)"),
)
NOT_ENCODER_OUTSIDE: tuple[tuple[str, str], ...] = (
    (r"^proj\.", "classification head of a fine-tuned model"),
)


def tap_norm(w: np.ndarray) -> np.ndarray:
  """||w|| per kernel tap over the (out, in) axes of a torch (O, I, K) weight, shape (1, 1, K)."""
  return np.sqrt(np.sum(np.square(w.astype(np.float64)), axis=(0, 1), keepdims=True)
                 ).astype(np.float32)


def fold_weight_norm(v: np.ndarray, g: np.ndarray) -> np.ndarray:
  """w = g * v / ||v|| (norm per tap), what torch computes from a weight-normed conv."""
  return (g * v / tap_norm(v)).astype(np.float32)


class _Reader(state_lib.StateReader):
  """State reader with the fairseq layouts (Conv1d, weight-normed positional conv)."""

  def conv_pos(self) -> Params:
    base = POS_CONV
    for g_key, v_key in WEIGHT_NORM_SPELLINGS:
      if f"{base}.{g_key}" in self.state or f"{base}.{v_key}" in self.state:
        # The model keeps (v, g) in torch's layout, so the tensors map 1:1, unfolded.
        g, v = self.get(f"{base}.{g_key}"), self.get(f"{base}.{v_key}")
        break
    else:
      if f"{base}.weight" in self.state:
        # Weight norm already folded away: v = w and g = ||w|| give back w exactly.
        v = self.get(f"{base}.weight")
        g = self.tag(tap_norm(v), f"{base}.weight")
      else:
        self.missing.append(f"{base}.weight_g/weight_v (or parametrizations.weight.original0/1, "
                            "or weight)")
        g = v = None
    if g is not None and g.ndim != 3:
      raise ValueError(f"{base}: weight-norm g has shape {g.shape}; ECG-FM normalises per "
                       "kernel tap (dim=2), so g must be (1, 1, kernel)")
    return {"v": v, "g": g, "bias": self.get(f"{base}.bias")}

  def layer(self, key: str) -> Params:
    attn = {name: self.linear(f"{key}.self_attn.{name}") for name in
            ("q_proj", "k_proj", "v_proj", "out_proj")}
    return {"self_attn": attn,
            "self_attn_layer_norm": self.norm(f"{key}.self_attn_layer_norm"),
            "fc1": self.linear(f"{key}.fc1"), "fc2": self.linear(f"{key}.fc2"),
            "final_layer_norm": self.norm(f"{key}.final_layer_norm")}


def _model_cfg(meta: Mapping[str, Any] | None) -> dict[str, Any]:
  """The model section of a fairseq checkpoint's config (new `cfg` or old `args`)."""
  meta = meta or {}
  cfg = meta.get("cfg")
  if isinstance(cfg, Mapping) and isinstance(cfg.get("model"), Mapping):
    return dict(cfg["model"])
  args = meta.get("args")
  if args is not None and not isinstance(args, Mapping):
    args = getattr(args, "__dict__", None)
  return dict(args) if isinstance(args, Mapping) else {}


def read_encoder(state: Mapping[str, Any], meta: Mapping[str, Any] | None = None
                 ) -> tuple[Params, state_lib.StateReader, dict[str, str], dict[str, int],
                            list[str]]:
  """Encoder of a pretraining or fine-tuned ECG-FM state dict.

  meta: the rest of the checkpoint ({'cfg': ...} or {'args': ...}), read for the head count
  and to refuse architectures the model lacks. Returns (ECGFMEncoder params with None where a
  key is missing, the reader (keys under their checkpoint names), keys dropped on purpose ->
  why, architecture fields, problems found in the config). Never raises on missing keys.
  """
  prefix = state_lib.find_prefix(state, ANCHOR) or ""
  inner = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
  r = _Reader(inner)
  fe = "feature_extractor.conv_layers"
  n_conv = max(state_lib.count_indexed(inner, rf"{re.escape(fe)}\.(\d+)\."), 4)
  extractor: Params = {f"conv_{i}": {"kernel": r.conv_kernel(f"{fe}.{i}.0.weight")}
                       for i in range(n_conv)}
  extractor["group_norm"] = r.norm(f"{fe}.0.2")
  params: Params = {
      "feature_extractor": extractor,
      "layer_norm": r.norm("layer_norm"),
      "post_extract_proj": r.linear("post_extract_proj"),
      "conv_pos": r.conv_pos(),
      "encoder_layer_norm": r.norm("encoder.layer_norm"),
  }
  depth = state_lib.count_indexed(inner, r"encoder\.layers\.(\d+)\.")
  for i in range(depth):
    params[f"layers_{i}"] = r.layer(f"encoder.layers.{i}")

  dropped = {prefix + k: why for k in inner for pattern, why in NOT_ENCODER
             if re.match(pattern, k)}
  dropped.update({k: why for k in state if not k.startswith(prefix)
                  for pattern, why in NOT_ENCODER_OUTSIDE if re.match(pattern, k)})
  # Report under the names the checkpoint uses.
  r.used = {prefix + k for k in r.used}
  r.missing = [prefix + k for k in r.missing]
  r.origin = {i: prefix + k for i, k in r.origin.items()}

  fields: dict[str, int] = {"depth": depth}
  shape = lambda key: np.shape(inner[key]) if key in inner else None  # noqa: E731
  if (proj := shape("post_extract_proj.weight")) is not None:
    fields["width"] = int(proj[0])
  if (conv0 := shape(f"{fe}.0.0.weight")) is not None:
    fields["conv_channels"] = int(conv0[0])
  if (fc1 := shape("encoder.layers.0.fc1.weight")) is not None:
    fields["mlp_dim"] = int(fc1[0])
  v = params["conv_pos"]["v"]
  if v is not None and v.ndim == 3 and v.shape[1]:
    fields["conv_pos_kernel"] = int(v.shape[2])
    fields["conv_pos_groups"] = int(v.shape[0]) // int(v.shape[1])
  cfg = _model_cfg(meta)
  if isinstance(cfg.get("encoder_attention_heads"), int):
    fields["num_heads"] = cfg["encoder_attention_heads"]
  return params, r, dropped, fields, _cfg_problems(cfg)


def _cfg_problems(cfg: Mapping[str, Any]) -> list[str]:
  """Settings in the checkpoint's config that change the computation but not the key names."""
  problems = []
  if cfg.get("layer_norm_first"):
    problems.append("cfg.model.layer_norm_first is True (a pre-LN transformer); ecgjax's ECG-FM "
                    "encoder is post-LN as the published model")
  if cfg.get("extractor_mode", "default") != "default":
    problems.append(f"cfg.model.extractor_mode is {cfg['extractor_mode']!r}; only 'default' "
                    "(one GroupNorm after the first conv) is supported")
  layers = cfg.get("conv_feature_layers")
  if isinstance(layers, str) and re.sub(r"\s", "", layers) != "[(256,2,2)]*4":
    # Widths show in the weights; kernel and stride only here. The string is never evaluated.
    kernels = re.findall(r"\(\s*\d+\s*,\s*(\d+)\s*,\s*(\d+)\s*\)", layers)
    if not kernels or any(k != ("2", "2") for k in kernels):
      problems.append(f"cfg.model.conv_feature_layers is {layers!r}; the model's feature "
                      "extractor has kernel 2, stride 2 in every block")
  return problems


def read_pretraining_model(state: Mapping[str, Any], meta: Mapping[str, Any] | None = None
                           ) -> tuple[Params, state_lib.StateReader, list[str]]:
  """The WHOLE wav2vec 2.0 pretraining model of a fairseq-signals checkpoint, as ecgjax ECGFM
  params: the encoder (with mask_emb), the quantiser (vars, weight_proj), project_q and
  final_proj; None where a key is missing. Returns (params, reader, config problems); the
  sizes are checked against the model the config builds. Never raises on keys."""
  enc, r, _, _, problems = read_encoder(state, meta)
  prefix = state_lib.find_prefix(state, ANCHOR) or ""
  if prefix:
    problems.append(f"the checkpoint nests the encoder under {prefix!r} (a fine-tuned model): "
                    "it has no pretraining heads to continue from")
  r.state = dict(state)  # the pretraining heads sit beside the encoder keys
  enc["mask_emb"] = r.get("mask_emb")
  params: Params = {
      "encoder": enc,
      "quantizer": {"vars": r.get("quantizer.vars"),
                    "weight_proj": r.linear("quantizer.weight_proj")},
      "project_q": r.linear("project_q"),
      "final_proj": r.linear("final_proj"),
  }
  return params, r, problems
