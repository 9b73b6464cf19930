"""The export file format: `DIR/export/{config.json, params.msgpack}`, loadable on one CPU.

An export is everything a downstream script needs and nothing of the training code:
which encoder to build (model name, variant, constructor overrides), its parameters,
the input contract (sampling rate, length, leads and the preprocessing the training
data had), and what the embedding is (dimension, pooling).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import flax.serialization
import jax
import numpy as np

import ecgjax
from ecgjax import contract as contract_lib
from ecgjax import models
from ecgjax.errors import UserError

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
_REQUIRED = ("format_version", "model", "variant", "encoder", "input", "embedding",
             "params_file", "params_sha256")


class ExportError(UserError, ValueError):
  """An export directory that cannot be used, with what is wrong."""


def save_export(directory: str, encoder_params: Any, encoder: dict[str, Any],
                input_contract: dict[str, Any], *, training: dict[str, Any] | None = None) -> str:
  """Writes an export atomically (temporary directory, then rename); returns its path.

  `encoder` is an objective's description: {"model", "variant", "module", "overrides",
  "embedding": {"dim", "pooling"}}; `input_contract` is an `InputContract.to_dict()`.
  """
  params = jax.tree.map(lambda x: np.asarray(jax.device_get(x)), encoder_params)
  blob = flax.serialization.msgpack_serialize(params)
  config = {
      "format_version": FORMAT_VERSION,
      "model": encoder["model"],
      "variant": encoder["variant"],
      "encoder": {"module": encoder["module"], "overrides": encoder.get("overrides", {})},
      "input": input_contract,
      "embedding": encoder["embedding"],
      "params_file": PARAMS_FILE,
      "params_sha256": hashlib.sha256(blob).hexdigest(),
      "training": training or {},
      "ecgjax_version": ecgjax.__version__,
  }
  directory = os.path.abspath(directory)
  tmp = directory + ".tmp"
  os.makedirs(tmp, exist_ok=True)
  with open(os.path.join(tmp, PARAMS_FILE), "wb") as f:
    f.write(blob)
  with open(os.path.join(tmp, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2, sort_keys=True)
  if os.path.exists(directory):
    old = directory + ".old"
    os.replace(directory, old)
    os.replace(tmp, directory)
    _rmtree(old)
  else:
    os.replace(tmp, directory)
  return directory


def _rmtree(path: str) -> None:
  import shutil
  shutil.rmtree(path, ignore_errors=True)


@dataclasses.dataclass
class Export:
  """A loaded export: config, params and the encoder module they belong to."""
  directory: str
  config: dict[str, Any]
  params: Any

  @property
  def module(self) -> Any:
    """The Flax encoder module, built from the export's model description."""
    enc = self.config["encoder"]
    return models.build_model(enc["module"], self.config["variant"], **enc["overrides"])

  @property
  def contract(self) -> contract_lib.InputContract:
    """The input contract (`ecgjax.data.Preprocessing.of(...)` processes records by it)."""
    return contract_lib.InputContract.from_dict(self.config["input"])

  @property
  def dim(self) -> int:
    """Embedding dimension."""
    return int(self.config["embedding"]["dim"])


def load_export(directory: str) -> Export:
  """Reads and checks an export; errors say which file or key is wrong."""
  directory = os.path.abspath(directory)
  cfg_path = os.path.join(directory, CONFIG_FILE)
  if not os.path.isfile(cfg_path):
    raise ExportError(f"{directory} is not an ecgjax export: {CONFIG_FILE} not found "
                      "(pass the export directory, e.g. WORKDIR/export)")
  try:
    with open(cfg_path) as f:
      config = json.load(f)
  except json.JSONDecodeError as e:
    raise ExportError(f"{cfg_path} is not valid JSON: {e}") from e
  missing = [k for k in _REQUIRED if k not in config]
  if missing:
    raise ExportError(f"{cfg_path} lacks required keys {missing}")
  version = config["format_version"]
  if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
    raise ExportError(f"{cfg_path}: format_version {version!r} is not supported by ecgjax "
                      f"{ecgjax.__version__} (supports 1..{FORMAT_VERSION}); "
                      "upgrade ecgjax to read newer exports")
  params_path = os.path.join(directory, config["params_file"])
  if not os.path.isfile(params_path):
    raise ExportError(f"{params_path} not found (the export is incomplete)")
  with open(params_path, "rb") as f:
    blob = f.read()
  digest = hashlib.sha256(blob).hexdigest()
  if digest != config["params_sha256"]:
    raise ExportError(f"{params_path} is corrupt: sha256 {digest} != {config['params_sha256']} "
                      f"recorded in {CONFIG_FILE}")
  params = flax.serialization.msgpack_restore(blob)
  return Export(directory=directory, config=config, params=params)
