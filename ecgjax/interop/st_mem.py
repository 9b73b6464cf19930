"""Official ST-MEM PyTorch state dicts (as NumPy arrays) -> ecgjax STMEM / STMEMEncoder params.

Key names follow SPEC.md section 8. The released encoder has unprefixed keys
(`to_patch_embedding.*`, `block{i}.*`, `norm`); the full MAE has them under `encoder.` plus the
decoder keys, and repeats the (shared) patch embedding at top level as `to_patch_embedding.*`.
Nothing is ever kept at its random init: every missing or unexpected key raises.
"""

from collections.abc import Mapping, Sequence
import re
from typing import Any

import numpy as np

from ecgjax.interop import state as state_lib

Params = dict[str, Any]


class _Reader(state_lib.StateReader):
  """State reader with ST-MEM's layouts. torch Linear's (out, in) -> (in, out) holds for the
  fused qkv too: its out axis is already laid out (3, heads, head_dim), as ours."""

  def block(self, prefix: str) -> Params:
    return {
        "attn_norm": self.norm(f"{prefix}.attn.norm"),
        "attn": {"qkv": self.linear(f"{prefix}.attn.fn.to_qkv"),
                 "out": self.linear(f"{prefix}.attn.fn.to_out.0")},
        "mlp_norm": self.norm(f"{prefix}.ff.norm"),
        # net.1 is the GELU and net.2/net.4 dropouts, hence the 0 / 3 indices.
        "mlp": {"fc1": self.linear(f"{prefix}.ff.fn.net.0"),
                "fc2": self.linear(f"{prefix}.ff.fn.net.3")},
    }

  def squeezed(self, key: str, ndim: int) -> np.ndarray | None:
    # torch keeps leading broadcast axes: pos tables (1, rows, dim), the mask token (1, 1, dim).
    t = self.get(key)
    return None if t is None else self.tag(t.reshape(t.shape[t.ndim - ndim:]), key)


def _encoder(r: _Reader, prefix: str) -> Params:
  depth = state_lib.count_indexed(r.state, rf"{re.escape(prefix)}block(\d+)\.")
  n_leads = state_lib.count_indexed(r.state, rf"{re.escape(prefix)}lead_embeddings\.(\d+)$")
  p = {
      "patch_in_norm": r.norm(f"{prefix}to_patch_embedding.1"),
      "patch_embed": r.linear(f"{prefix}to_patch_embedding.2"),
      "patch_out_norm": r.norm(f"{prefix}to_patch_embedding.3"),
      "pos_embedding": r.squeezed(f"{prefix}pos_embedding", 2),
      "sep_embedding": r.get(f"{prefix}sep_embedding"),
      "norm": r.norm(f"{prefix}norm"),
  }
  # torch holds one ParameterList entry per lead; we hold one (num_leads, dim) table.
  rows = [r.get(f"{prefix}lead_embeddings.{i}") for i in range(n_leads)]
  p["lead_embedding"] = (None if any(x is None for x in rows) or not rows
                         else r.tag(np.stack(rows), f"{prefix}lead_embeddings.*"))
  if not rows:
    r.missing.append(f"{prefix}lead_embeddings.*")
  for i in range(depth):
    p[f"block_{i}"] = r.block(f"{prefix}block{i}")
  return p


def _check_alias(r: _Reader) -> None:
  """The full model's top-level to_patch_embedding.* is the encoder's, registered twice."""
  for key in [k for k in r.state if k.startswith("to_patch_embedding.")]:
    twin = f"encoder.{key}"
    if twin in r.state and not np.array_equal(np.asarray(r.state[key]),
                                              np.asarray(r.state[twin])):
      raise ValueError(f"{key} differs from {twin}; they should be one shared module")
    r.used.add(key)


# Checkpoint parts that are not the encoder: a converted export drops them, and says so.
NOT_ENCODER: tuple[tuple[str, str], ...] = (
    (r"^(to_decoder_embedding|mask_embedding|decoder_pos_embed|decoder_blocks|decoder_norm"
     r"|decoder_head)(\.|$)", "MAE decoder (pretraining only)"),
    (r"^head\.", "classification head of a fine-tuned model"),
)
HEAD_DIM = 64  # fixed in ST-MEM: the head count follows from the fused qkv width


def read_encoder(state: Mapping[str, Any]
                 ) -> tuple[Params, state_lib.StateReader, dict[str, str], dict[str, int]]:
  """Encoder of an `encoder.pth`, full-model or fine-tuned state dict.

  Returns (STMEMEncoder params with None where a key is missing, the reader, keys dropped on
  purpose -> why, architecture fields read off the shapes). Never raises on missing keys.
  """
  prefix = state_lib.find_prefix(state, "sep_embedding") or ""
  r = _Reader(state)
  dropped = {k: why for k in state for pattern, why in NOT_ENCODER if re.match(pattern, k)}
  if prefix:
    _check_alias(r)
    dropped.update({k: f"the same module as {prefix}{k}, saved twice"
                    for k in state if k.startswith("to_patch_embedding.")})
  params = _encoder(r, prefix)
  fields: dict[str, int] = {}
  shape = lambda key: np.shape(state[prefix + key]) if prefix + key in state else None  # noqa: E731
  if (embed := shape("to_patch_embedding.2.weight")) is not None:
    fields["width"], fields["patch_size"] = int(embed[0]), int(embed[1])
  fields["depth"] = state_lib.count_indexed(state, rf"{re.escape(prefix)}block(\d+)\.")
  if (qkv := shape("block0.attn.fn.to_qkv.weight")) is not None:
    fields["num_heads"] = int(qkv[0]) // (3 * HEAD_DIM)
  if (fc1 := shape("block0.ff.fn.net.0.weight")) is not None:
    fields["mlp_dim"] = int(fc1[0])
  if leads := state_lib.count_indexed(state, rf"{re.escape(prefix)}lead_embeddings\.(\d+)$"):
    fields["num_leads"] = leads
  if (pos := shape("pos_embedding")) is not None and "patch_size" in fields:
    fields["seq_len"] = (int(pos[-2]) - 2) * fields["patch_size"]
  return params, r, dropped, fields


def read_full_model(state: Mapping[str, Any]) -> tuple[Params, state_lib.StateReader]:
  """STMEM (encoder + MAE decoder + mask token) params of a full-model state dict, None where
  a key is missing, and the reader that knows which keys were used. Never raises on content
  (the shared patch embedding registered twice must be one tensor, or ValueError)."""
  r = _Reader(state)
  _check_alias(r)
  dec_depth = state_lib.count_indexed(state, r"decoder_blocks\.(\d+)\.")
  params = {
      "encoder": _encoder(r, "encoder."),
      "decoder_embed": r.linear("to_decoder_embedding"),
      "mask_embedding": r.squeezed("mask_embedding", 1),
      "decoder_pos_embedding": r.squeezed("decoder_pos_embed", 2),
      "decoder_norm": r.norm("decoder_norm"),
      "decoder_head": r.linear("decoder_head"),
  }
  for i in range(dec_depth):
    params[f"decoder_block_{i}"] = r.block(f"decoder_blocks.{i}")
  return params, r


def params_from_torch_state_dict(state: Mapping[str, Any], *, full_model: bool,
                                 template: Any = None,
                                 ignore: Sequence[str] = ()) -> Params:
  """Map an official ST-MEM state dict to the `params` collection of STMEM or STMEMEncoder.

  full_model: True for the MAE checkpoint (-> STMEM params), False for `encoder.pth`
    (-> STMEMEncoder params). template: optional param tree (e.g. from jax.eval_shape of the
    model's init) whose paths and shapes must match exactly. ignore: regexes of checkpoint keys
    to drop on purpose (e.g. r"^head\\." for a fine-tuned classifier head).
  Raises ValueError listing every missing and unexpected key.
  """
  state = {k: v for k, v in state.items() if not any(re.search(p, k) for p in ignore)}
  if full_model:
    params, r = read_full_model(state)
  else:
    r = _Reader(state)
    params = _encoder(r, "")
  unexpected = sorted(set(state) - r.used)
  if r.missing or unexpected:
    raise ValueError(
        f"ST-MEM {'full-model' if full_model else 'encoder'} state dict does not match:\n"
        f"  missing: {r.missing or 'none'}\n  unexpected: {unexpected or 'none'}")
  if template is not None:
    state_lib.check_template(params, template, "ST-MEM")
  return params
