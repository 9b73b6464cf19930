"""Official ST-MEM PyTorch state dicts (as NumPy arrays) -> ecgjax STMEM / STMEMEncoder params.

Key names follow SPEC.md section 8. The released encoder has unprefixed keys
(`to_patch_embedding.*`, `block{i}.*`, `norm`); the full MAE has them under `encoder.` plus the
decoder keys, and repeats the (shared) patch embedding at top level as `to_patch_embedding.*`.
Nothing is ever kept at its random init: every missing or unexpected key raises.
"""

from collections.abc import Mapping, Sequence
import re
from typing import Any

import jax
import numpy as np

Params = dict[str, Any]


class _Reader:
  """Hands out state-dict entries as float32 arrays and records what was missing or used."""

  def __init__(self, state: Mapping[str, Any]):
    self.state = state
    self.used: set[str] = set()
    self.missing: list[str] = []

  def get(self, key: str) -> np.ndarray | None:
    if key not in self.state:
      self.missing.append(key)
      return None
    self.used.add(key)
    return np.asarray(self.state[key], np.float32)

  def linear(self, key: str) -> Params:
    # torch Linear stores weight as (out, in); a Flax Dense kernel is (in, out). This holds for
    # the fused qkv too: its out axis is already laid out (3, heads, head_dim), as ours.
    w, b = self.get(f"{key}.weight"), self.get(f"{key}.bias")
    return {"kernel": None if w is None else np.ascontiguousarray(w.T), "bias": b}

  def norm(self, key: str) -> Params:
    return {"scale": self.get(f"{key}.weight"), "bias": self.get(f"{key}.bias")}

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
    return None if t is None else t.reshape(t.shape[t.ndim - ndim:])


def _count(state: Mapping[str, Any], pattern: str) -> int:
  """1 + the largest index captured by `pattern` over the keys (0 if none match)."""
  found = [int(m.group(1)) for k in state if (m := re.match(pattern, k))]
  return max(found) + 1 if found else 0


def _encoder(r: _Reader, prefix: str) -> Params:
  depth = _count(r.state, rf"{re.escape(prefix)}block(\d+)\.")
  n_leads = _count(r.state, rf"{re.escape(prefix)}lead_embeddings\.(\d+)$")
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
  p["lead_embedding"] = None if any(x is None for x in rows) or not rows else np.stack(rows)
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


def _check_template(params: Params, template: Any) -> None:
  """Raise listing every path whose presence or shape differs from `template`."""
  def flat(tree):
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.shape(v)
            for path, v in leaves}
  got, want = flat(params), flat(template)
  problems = [f"missing {k} {want[k]}" for k in sorted(set(want) - set(got))]
  problems += [f"unexpected {k} {got[k]}" for k in sorted(set(got) - set(want))]
  problems += [f"shape of {k}: checkpoint {got[k]} vs model {want[k]}"
               for k in sorted(set(got) & set(want)) if got[k] != want[k]]
  if problems:
    raise ValueError("ST-MEM checkpoint does not fit the model:\n  " + "\n  ".join(problems))


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
  r = _Reader(state)
  if full_model:
    _check_alias(r)
    dec_depth = _count(state, r"decoder_blocks\.(\d+)\.")
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
  else:
    params = _encoder(r, "")
  unexpected = sorted(set(state) - r.used)
  if r.missing or unexpected:
    raise ValueError(
        f"ST-MEM {'full-model' if full_model else 'encoder'} state dict does not match:\n"
        f"  missing: {r.missing or 'none'}\n  unexpected: {unexpected or 'none'}")
  if template is not None:
    _check_template(params, template)
  return params
