"""Serving an export without the Python model code: its embedding function as StableHLO.

`write_serving(EXPORT)` (run at the end of every pretraining export; `python -m ecgjax.serve build
EXPORT [--batch 8]` for others) serializes the encoder's forward pass with `jax.export` for a
fixed batch and the contract's input shape, for the CPU and CUDA platforms, into
EXPORT/serving/: `embed.jax_exported` (the serialized function), `variables.npz` (its weights,
in the function's argument order) and `meta.json` (batch, input shape and dtype, platforms,
embedding size).

  from ecgjax import serve
  model = serve.load("runs/demo/stmem/export")      # needs only jax and numpy
  emb = model(x)            # x: (N, leads, samples) already brought to the export's contract

`load` imports nothing of ecgjax beyond this file and no flax: the function and its weights are
all it reads. Inputs are padded to whole batches and the padding dropped from the output.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np

SERVING_DIR = "serving"
FUNCTION_FILE = "embed.jax_exported"
VARIABLES_FILE = "variables.npz"
META_FILE = "meta.json"
PLATFORMS = ("cpu", "cuda")


def write_serving(directory: str, *, batch: int = 8,
                  platforms: tuple[str, ...] = PLATFORMS) -> str:
  """Serializes the export's embedding function into DIRECTORY/serving; returns that path."""
  import jax  # pylint: disable=g-import-not-at-top
  from jax import export as jax_export  # pylint: disable=g-import-not-at-top
  from ecgjax import export as export_lib  # pylint: disable=g-import-not-at-top
  from ecgjax import leads as leads_lib  # pylint: disable=g-import-not-at-top
  exp = export_lib.load_export(directory)
  module = exp.module
  kwargs: dict[str, Any] = {}
  if exp.modality == "image":
    contract = exp.image_contract
    shape = (int(contract["height"]), int(contract["width"]), int(contract["channels"]))
  else:
    contract = exp.contract
    names = tuple(contract.leads)
    shape = (len(names), int(contract.samples))
    if names != leads_lib.LEADS_12:
      kwargs["lead_idx"] = np.asarray(leads_lib.lead_indices(names), np.int32)
  leaves, tree = jax.tree.flatten(exp.variables)
  leaves = [np.asarray(x) for x in leaves]

  def embed(leaves, x):
    out = module.apply(jax.tree.unflatten(tree, leaves), x, **kwargs)
    return (out[0] if isinstance(out, tuple) else out).astype(np.float32)

  specs = ([jax.ShapeDtypeStruct(x.shape, x.dtype) for x in leaves],
           jax.ShapeDtypeStruct((int(batch),) + shape, np.float32))
  try:
    exported = jax_export.export(jax.jit(embed), platforms=tuple(platforms))(*specs)
  except Exception:  # pylint: disable=broad-except
    if tuple(platforms) == ("cpu",):
      raise
    # An op without a lowering for one of the platforms: serve the CPU at least, and say so.
    exported = jax_export.export(jax.jit(embed), platforms=("cpu",))(*specs)
  out = os.path.join(exp.directory, SERVING_DIR)
  os.makedirs(out, exist_ok=True)
  with open(os.path.join(out, FUNCTION_FILE), "wb") as f:
    f.write(exported.serialize())
  np.savez(os.path.join(out, VARIABLES_FILE), *leaves)
  meta = {"batch": int(batch), "input_shape": list(shape), "input_dtype": "float32",
          "platforms": list(exported.platforms), "dim": int(exported.out_avals[0].shape[-1]),
          "modality": exp.modality, "model": exp.config["model"],
          "variant": exp.config["variant"]}
  with open(os.path.join(out, META_FILE), "w") as f:
    json.dump(meta, f, indent=2, sort_keys=True)
  return out


class Served:
  """A deserialized embedding function with its weights: call it on (N, *input_shape)."""

  def __init__(self, directory: str):
    from jax import export as jax_export  # pylint: disable=g-import-not-at-top
    base = os.path.join(directory, SERVING_DIR)
    if not os.path.isfile(os.path.join(base, META_FILE)):
      raise FileNotFoundError(f"{directory} holds no serving function ({SERVING_DIR}/"
                              f"{META_FILE}); make one with python -m ecgjax.serve build "
                              f"{directory}")
    with open(os.path.join(base, META_FILE)) as f:
      self.meta = json.load(f)
    with open(os.path.join(base, FUNCTION_FILE), "rb") as f:
      self.exported = jax_export.deserialize(bytearray(f.read()))
    with np.load(os.path.join(base, VARIABLES_FILE)) as z:
      self.leaves = [z[f"arr_{i}"] for i in range(len(z.files))]
    self.batch = int(self.meta["batch"])
    self.input_shape = tuple(self.meta["input_shape"])

  def __call__(self, x: Any) -> np.ndarray:
    """(N, *input_shape) float32 -> (N, dim) embeddings, in batches of `self.batch`."""
    x = np.asarray(x, np.float32)
    if x.shape[1:] != self.input_shape:
      raise ValueError(f"inputs must be (N, {', '.join(map(str, self.input_shape))}) as the "
                       f"export's contract makes them, got {x.shape}")
    n = len(x)
    pad = (-n) % self.batch
    if pad:
      x = np.concatenate([x, np.zeros((pad,) + x.shape[1:], np.float32)])
    outs = [np.asarray(self.exported.call(self.leaves, x[i:i + self.batch]))
            for i in range(0, len(x), self.batch)]
    return np.concatenate(outs)[:n] if outs else np.zeros((0, self.meta["dim"]), np.float32)


def load(directory: str) -> Served:
  """The serving function of an export directory (see the module docstring)."""
  return Served(directory)


def main(argv: list[str] | None = None) -> int:
  """`python -m ecgjax.serve build EXPORT [--batch N]`."""
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog="python -m ecgjax.serve")
  sub = parser.add_subparsers(dest="command", required=True)
  build = sub.add_parser("build", help="serialize an export's embedding function")
  build.add_argument("export")
  build.add_argument("--batch", type=int, default=8)
  args = parser.parse_args(argv)
  from ecgjax import cli  # pylint: disable=g-import-not-at-top
  from ecgjax.errors import UserError  # pylint: disable=g-import-not-at-top
  if args.batch < 1:
    cli.fail(f"--batch must be >= 1, got {args.batch}")
  try:
    path = write_serving(args.export, batch=args.batch)
  except UserError as e:
    cli.fail(str(e))
  print(f"wrote {path} (batch {args.batch})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
