"""torchvision-layout ResNet state dicts (ImageNet ResNet-50 and kin) -> ecgjax ResNet2D variables.

torchvision names: `conv1`, `bn1` (the stem), `layer{1..4}.{b}.{conv,bn}{1,2[,3]}`,
`layer{s}.{b}.downsample.{0 (1x1 conv), 1 (BN)}`, `fc` (the ImageNet classifier). ecgjax's
ResNet2D is the same network (v1.5, stride on the 3x3 conv; models/resnet.py) under `body/`:
`stem_conv`, `stem_bn`, `stage{s-1}_block{b}/{conv,bn}{i}`, `proj_conv`, `proj_bn`, `head`.

What does not carry over one to one, and how it is handled:
- The first convolution sees RGB. For one-channel input (EIANet's binary printouts) its three
  filters are summed: the converted net on a gray picture g computes what torchvision's does
  on (g, g, g). With `channels=3` the filters are kept.
- EIANet's spatial-attention gates have no ImageNet weights: they stay at their random init and
  the report lists them as such (the conversion does not fail for them).
- `fc` is ImageNet's 1000-class head: dropped (the export is an encoder; fine-tuning adds its
  own head). `num_batches_tracked` is a step counter: nothing to carry.
- ImageNet weights expect mean/std-normalised RGB; ecgjax feeds pixels in [0, 1] (paper white
  = 1). Fine-tuning re-estimates the BatchNorm statistics; the report says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ecgjax.interop import state as state_lib

ATTENTION_NOTE = ("EIANet's spatial-attention gates have no counterpart in an ImageNet ResNet: "
                  "they start at their random init")
PIXELS_NOTE = ("the export takes ecgjax's [0, 1] pixels, not ImageNet's mean/std-normalised "
               "RGB; fine-tuning re-estimates the BatchNorm statistics")


class _Reader(state_lib.StateReader):
  """State reader with 2-D conv and BatchNorm layouts."""

  def conv2d(self, key: str, sum_rgb: bool = False) -> np.ndarray | None:
    """torch Conv2d weight (out, in, kh, kw) -> Flax (kh, kw, in, out); `sum_rgb` folds the
    input channels into one."""
    w = self.get(f"{key}.weight")
    if w is None:
      return None
    if w.ndim != 4:
      raise ValueError(f"{key}.weight: a Conv2d weight has 4 axes (out, in, kh, kw), got "
                       f"{w.shape}")
    if sum_rgb:
      w = w.sum(axis=1, keepdims=True)
    return self.tag(np.ascontiguousarray(w.transpose(2, 3, 1, 0)), f"{key}.weight")

  def bn(self, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """torch BatchNorm2d -> (Flax params {scale, bias}, batch_stats {mean, var})."""
    if f"{key}.num_batches_tracked" in self.state:
      self.used.add(f"{key}.num_batches_tracked")
    return ({"scale": self.get(f"{key}.weight"), "bias": self.get(f"{key}.bias")},
            {"mean": self.get(f"{key}.running_mean"), "var": self.get(f"{key}.running_var")})


def read_variables(state: Mapping[str, Any], *, channels: int = 1
                   ) -> tuple[dict[str, Any], dict[str, Any], _Reader, dict[str, Any]]:
  """(params, batch_stats, reader, architecture fields read off the shapes) of a torchvision
  ResNet state dict; missing keys are recorded in the reader, never raised."""
  if channels not in (1, 3):
    raise ValueError(f"channels must be 1 or 3, got {channels}")
  r = _Reader(state)
  body: dict[str, Any] = {"stem_conv": {"kernel": r.conv2d("conv1", sum_rgb=channels == 1)}}
  stats: dict[str, Any] = {}
  body["stem_bn"], stats["stem_bn"] = r.bn("bn1")
  stages = []
  for s in range(4):
    n = state_lib.count_indexed(state, rf"layer{s + 1}\.(\d+)\.")
    stages.append(n)
    for b in range(n):
      key, name = f"layer{s + 1}.{b}", f"stage{s}_block{b}"
      p: dict[str, Any] = {}
      st: dict[str, Any] = {}
      for i in (1, 2, 3):
        if i == 3 and f"{key}.conv3.weight" not in state:
          break  # a basic block
        p[f"conv{i}"] = {"kernel": r.conv2d(f"{key}.conv{i}")}
        p[f"bn{i}"], st[f"bn{i}"] = r.bn(f"{key}.bn{i}")
      if f"{key}.downsample.0.weight" in state:
        p["proj_conv"] = {"kernel": r.conv2d(f"{key}.downsample.0")}
        p["proj_bn"], st["proj_bn"] = r.bn(f"{key}.downsample.1")
      body[name], stats[name] = p, st
  fields: dict[str, Any] = {}
  if all(stages):
    fields["stage_sizes"] = tuple(stages)
    fields["block"] = "bottleneck" if "layer1.0.conv3.weight" in state else "basic"
  stem = state.get("conv1.weight")
  if stem is not None and np.ndim(stem) == 4:
    fields["width"] = int(np.shape(stem)[0])
    fields["stem_kernel"] = int(np.shape(stem)[2])
  return {"body": body}, {"body": stats}, r, fields


def dropped_keys(state: Mapping[str, Any]) -> dict[str, str]:
  """Checkpoint keys that are not part of the encoder, with why."""
  return {k: "the ImageNet classifier (fc): fine-tuning adds its own head"
          for k in state if k.startswith("fc.")}
