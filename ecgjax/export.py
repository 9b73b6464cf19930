"""The export file format: `DIR/export/{config.json, params.msgpack[, collections.msgpack]}`.

An export is everything a downstream script needs and nothing of the training code, loadable
on one CPU: which encoder to build (model name, variant, constructor overrides), its
parameters, its other variable collections (BatchNorm running statistics: a ResNet or a Net1D
with BN computes something else without them), the input contract (a signal contract: rate,
length, leads, filters; or an image contract: `"modality": "image"` and the image
preprocessing), and what the embedding is (dimension, pooling).

Format 1 holds params only; format 2 adds `collections.msgpack` (written only when there are
collections, so exports without them stay format 1 and older ecgjax versions still read them).
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

FORMAT_VERSION = 2
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.msgpack"
COLLECTIONS_FILE = "collections.msgpack"
_REQUIRED = ("format_version", "model", "variant", "encoder", "input", "embedding",
             "params_file", "params_sha256")


class ExportError(UserError, ValueError):
  """An export directory that cannot be used, with what is wrong."""


def _blob(tree: Any) -> bytes:
  return flax.serialization.msgpack_serialize(
      jax.tree.map(lambda x: np.asarray(jax.device_get(x)), tree))


def save_export(directory: str, encoder_params: Any, encoder: dict[str, Any],
                input_contract: dict[str, Any], *, training: dict[str, Any] | None = None,
                collections: dict[str, Any] | None = None) -> str:
  """Writes an export atomically (temporary directory, then rename); returns its path.

  `encoder` is an objective's description: {"model", "variant", "module", "overrides",
  "embedding": {"dim", "pooling"}}; `input_contract` is an `InputContract.to_dict()` or an
  image contract (`ImagePreprocessing.to_dict()` with "modality": "image"); `collections`:
  the encoder's non-param variables ({"batch_stats": ...}), None or {} for none.
  """
  blob = _blob(encoder_params)
  collections = {k: v for k, v in (collections or {}).items() if k != "params" and v}
  config = {
      "format_version": 2 if collections else 1,
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
  files = {PARAMS_FILE: blob}
  if collections:
    files[COLLECTIONS_FILE] = _blob(collections)
    config["collections_file"] = COLLECTIONS_FILE
    config["collections"] = sorted(collections)
    config["collections_sha256"] = hashlib.sha256(files[COLLECTIONS_FILE]).hexdigest()
  tmp = directory + ".tmp"
  os.makedirs(tmp, exist_ok=True)
  for name, data in files.items():
    with open(os.path.join(tmp, name), "wb") as f:
      f.write(data)
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
  collections: dict[str, Any] = dataclasses.field(default_factory=dict)  # e.g. batch_stats

  @property
  def variables(self) -> dict[str, Any]:
    """What `module.apply` takes: {"params": ..., **collections}."""
    return {"params": self.params, **self.collections}

  @property
  def modality(self) -> str:
    """"signal" (an `InputContract`) or "image" (an image preprocessing contract)."""
    return str(self.config["input"].get("modality", "signal"))

  @property
  def module(self) -> Any:
    """The Flax encoder module, built from the export's model description."""
    enc = self.config["encoder"]
    return models.build_model(enc["module"], self.config["variant"], **enc["overrides"])

  @property
  def contract(self) -> contract_lib.InputContract:
    """The signal input contract (`ecgjax.data.Preprocessing.of(...)` processes records by
    it); an image export has none (see `image_contract`)."""
    if self.modality != "signal":
      raise ExportError(f"export {self.directory} takes images, not signals: its input is an "
                        "image contract")
    return contract_lib.InputContract.from_dict(self.config["input"])

  @property
  def image_contract(self) -> dict[str, Any]:
    """An image export's preprocessing keys (`ecgjax.data.ImagePreprocessing.from_dict`)."""
    if self.modality != "image":
      raise ExportError(f"export {self.directory} takes signals, not images")
    return {k: v for k, v in self.config["input"].items() if k != "modality"}

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
  params = _read_checked(directory, config["params_file"], config["params_sha256"])
  collections = {}
  if config.get("collections_file"):
    collections = _read_checked(directory, config["collections_file"],
                                config.get("collections_sha256", ""))
    if not isinstance(collections, dict):
      raise ExportError(f"{os.path.join(directory, config['collections_file'])} does not hold "
                        "named variable collections")
  return Export(directory=directory, config=config, params=params, collections=collections)


def _read_checked(directory: str, name: str, sha256: str) -> Any:
  """A msgpack file of the export, its checksum verified."""
  path = os.path.join(directory, name)
  if not os.path.isfile(path):
    raise ExportError(f"{path} not found (the export is incomplete)")
  with open(path, "rb") as f:
    blob = f.read()
  digest = hashlib.sha256(blob).hexdigest()
  if digest != sha256:
    raise ExportError(f"{path} is corrupt: sha256 {digest} != {sha256 or '(none)'} "
                      f"recorded in {CONFIG_FILE}")
  try:
    return flax.serialization.msgpack_restore(blob)
  except Exception as e:  # pylint: disable=broad-except
    raise ExportError(f"{path} is not a readable msgpack file: {e}") from None
