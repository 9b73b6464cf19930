"""Official Net1D (ECGFounder / AnyECG-CCTA) PyTorch state dicts -> ecgjax Net1D variables.

Key names follow SPEC.md section 8: `first_conv.conv`, `first_bn`,
`stage_list.{s}.block_list.{b}.{bn1,conv1.conv,bn2,conv2.conv,bn3,conv3.conv,se_fc1,se_fc2}`,
`dense`. The reference registers BatchNorm modules even when it never applies them (all of them
with BN off; the network's first bn1 always); our Net1D does not create those, so their keys are
unused. They are dropped only when the caller says so (`ignore_unused_bn=True`), and then logged;
any other missing, unexpected or mis-shaped key raises.
"""

from collections.abc import Mapping
import logging
import re
from typing import Any

from ecgjax.interop import state as state_lib

Variables = dict[str, Any]

_BN_KEY = re.compile(r"^(first_bn|stage_list\.\d+\.block_list\.\d+\.bn[123])\.")
_BN_LEAVES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def unwrap_state_dict(state: Mapping[str, Any]) -> dict[str, Any]:
  """ECGFounder saves {'state_dict': ...}; DataParallel adds 'module.'; strip both."""
  return state_lib.unwrap_state_dict(state)[0]


class _Reader(state_lib.StateReader):
  """State reader with Net1D's layouts (Conv1d, BatchNorm)."""

  def conv(self, key: str) -> dict[str, Any]:
    return {"conv": {"kernel": self.conv_kernel(f"{key}.weight"),
                     "bias": self.get(f"{key}.bias")}}

  def bn(self, key: str, params: dict, stats: dict, name: str) -> None:
    params[name] = {"scale": self.get(f"{key}.weight"), "bias": self.get(f"{key}.bias")}
    stats[name] = {"mean": self.get(f"{key}.running_mean"), "var": self.get(f"{key}.running_var")}
    if f"{key}.num_batches_tracked" in self.state:
      self.used.add(f"{key}.num_batches_tracked")  # a step counter: nothing to carry over


def read_variables(state: Mapping[str, Any], *, use_bn: bool, head: bool = True
                   ) -> tuple[Variables, state_lib.StateReader]:
  """(variables with None where a key is missing, the reader) of an unwrapped state dict."""
  r = _Reader(state)
  params: dict[str, Any] = {"stem": r.conv("first_conv.conv")}
  if head:
    params["head"] = r.linear("dense")
  stats: dict[str, Any] = {}
  if use_bn:
    r.bn("first_bn", params, stats, "stem_bn")
  for s in range(state_lib.count_indexed(state, r"stage_list\.(\d+)\.")):
    for b in range(state_lib.count_indexed(state, rf"stage_list\.{s}\.block_list\.(\d+)\.")):
      key, p = f"stage_list.{s}.block_list.{b}", {}
      blk_stats: dict[str, Any] = {}
      for i in (1, 2, 3):
        if use_bn and not (i == 1 and s == 0 and b == 0):  # the first bn1 is never applied
          r.bn(f"{key}.bn{i}", p, blk_stats, f"bn{i}")
        p[f"conv{i}"] = r.conv(f"{key}.conv{i}.conv")
      p["se_fc1"], p["se_fc2"] = r.linear(f"{key}.se_fc1"), r.linear(f"{key}.se_fc2")
      params[f"stage{s}_block{b}"] = p
      if blk_stats:
        stats[f"stage{s}_block{b}"] = blk_stats
  if not any(k.startswith("stage_list.") for k in state):
    r.missing.append("stage_list.*")
  variables: Variables = {"params": params}
  if stats:
    variables["batch_stats"] = stats
  return variables, r


def is_bn_key(key: str) -> bool:
  """A BatchNorm entry of the reference (weight, bias, running stats, step counter)."""
  return bool(_BN_KEY.match(key)) and key.rsplit(".", 1)[1] in _BN_LEAVES


def map_state_dict(state: Mapping[str, Any], *, use_bn: bool
                   ) -> tuple[Variables, list[str], list[str], list[str]]:
  """(variables, missing keys, unused BN keys, other unexpected keys); never raises on content."""
  state = unwrap_state_dict(state)
  variables, r = read_variables(state, use_bn=use_bn)
  left = sorted(set(state) - r.used)
  unused_bn = [k for k in left if is_bn_key(k)]
  unexpected = [k for k in left if not is_bn_key(k)]
  return variables, r.missing, unused_bn, unexpected


def params_from_torch_state_dict(state: Mapping[str, Any], *, use_bn: bool,
                                 template: Any = None,
                                 ignore_unused_bn: bool = False) -> Variables:
  """Map an official Net1D state dict (or {'state_dict': ...}) to Net1D variables.

  Returns {"params": ..., "batch_stats": ...} ("batch_stats" only with use_bn). template:
  optional variables tree (e.g. jax.eval_shape of Net1D.init) whose paths and shapes must match.
  ignore_unused_bn: drop (and log) the reference's BatchNorm entries the model never applies:
  every one with use_bn=False, and the first block's bn1 in any case. Without it they raise.
  Raises ValueError listing every missing, unexpected or mis-shaped key.
  """
  variables, missing, unused_bn, unexpected = map_state_dict(state, use_bn=use_bn)
  problems = []
  if missing:
    problems.append(f"missing: {missing}")
  if unexpected:
    problems.append(f"unexpected: {unexpected}")
  if unused_bn and not ignore_unused_bn:
    problems.append(f"BatchNorm entries the model does not apply (pass ignore_unused_bn=True "
                    f"to drop them): {unused_bn}")
  if problems:
    raise ValueError("Net1D state dict does not match:\n  " + "\n  ".join(problems))
  if unused_bn:
    logging.info("Net1D import dropped %d unused BatchNorm entries: %s", len(unused_bn),
                 ", ".join(unused_bn))
  if template is not None:
    state_lib.check_template(variables, template, "Net1D")
  return variables
