"""The export file format: `DIR/export/{config.json, params.safetensors[,
collections.safetensors], README.md}`.

An export is everything a downstream script needs and nothing of the training code, loadable
on one CPU: which encoder to build (model name, variant, constructor overrides), its
parameters, its other variable collections (BatchNorm running statistics: a ResNet or a Net1D
with BN computes something else without them), the input contract (a signal contract: rate,
length, leads, filters; or an image contract: `"modality": "image"` and the image
preprocessing), and what the embedding is (dimension, pooling).

Format 1 holds params only; format 2 adds `collections.msgpack` (written only when there are
collections); format 3 stores both as safetensors (one tensor per leaf, named by its path
joined with "/": what the Hub and PyTorch users read, with no pickle and no flax needed), and
every export carries a model card (`README.md`: architecture, parameter count, input contract,
training, licence of imported weights; `model_card`). Formats 1 and 2 (msgpack) still load.
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

FORMAT_VERSION = 3
CONFIG_FILE = "config.json"
PARAMS_FILE = "params.safetensors"
COLLECTIONS_FILE = "collections.safetensors"
CARD_FILE = "README.md"
_TREE_TAG = "ecgjax-tree"  # safetensors metadata: how the flat names map back to a tree
_REQUIRED = ("format_version", "model", "variant", "encoder", "input", "embedding",
             "params_file", "params_sha256")


class ExportError(UserError, ValueError):
  """An export directory that cannot be used, with what is wrong."""


def _flatten(tree: Any, prefix: str = "") -> tuple[dict[str, np.ndarray], list[str]]:
  """Leaves by "/"-joined path, and the paths of empty dicts (which have no leaf to keep)."""
  leaves: dict[str, np.ndarray] = {}
  empty: list[str] = []
  items = tree.items() if hasattr(tree, "items") else None
  if items is None:
    return {prefix: np.require(np.asarray(jax.device_get(tree)), requirements="C")}, []
  if not tree:
    return {}, [prefix]
  for key, value in items:
    key = str(key)
    if "/" in key:
      raise ExportError(f"parameter name {key!r} contains '/', which export paths use")
    sub, sub_empty = _flatten(value, f"{prefix}/{key}" if prefix else key)
    leaves.update(sub)
    empty += sub_empty
  return leaves, empty


def _blob(tree: Any) -> bytes:
  """A variable tree as safetensors bytes."""
  from safetensors.numpy import save  # pylint: disable=g-import-not-at-top
  leaves, empty = _flatten(tree)
  return save(leaves, metadata={"format": _TREE_TAG, "empty": json.dumps(empty)})


def _safetensors_metadata(blob: bytes) -> dict[str, str]:
  """The `__metadata__` of a safetensors header (8-byte length, then JSON)."""
  n = int.from_bytes(blob[:8], "little")
  return json.loads(blob[8:8 + n]).get("__metadata__") or {}


def _unblob(blob: bytes) -> dict[str, Any]:
  """safetensors bytes written by `_blob` -> the nested dict of numpy arrays."""
  from safetensors.numpy import load  # pylint: disable=g-import-not-at-top
  tree: dict[str, Any] = {}

  def put(path: str, value: Any) -> None:
    node = tree
    *parents, last = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    node[last] = value

  for path in json.loads(_safetensors_metadata(blob).get("empty", "[]")):
    if path:
      put(path, {})
  for path, value in load(blob).items():
    put(path, value)
  return tree


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
  with open(os.path.join(tmp, CARD_FILE), "w") as f:
    f.write(model_card(config, encoder_params))
  if os.path.exists(directory):
    old = directory + ".old"
    os.replace(directory, old)
    os.replace(tmp, directory)
    _rmtree(old)
  else:
    os.replace(tmp, directory)
  return directory


def _count(tree: Any) -> int:
  return int(sum(np.size(x) for x in jax.tree.leaves(tree)))


def _value(v: Any) -> str:
  return f"`{json.dumps(v)}`" if not isinstance(v, str) else f"`{v}`"


def model_card(config: dict[str, Any], params: Any) -> str:
  """The export's README.md: what the model is, takes, was trained on, and may be used for."""
  enc = config["encoder"]
  emb = config["embedding"]
  training = dict(config.get("training") or {})
  origin = training.pop("converted_from", None)
  metrics = training.pop("metrics", None)
  task = emb.get("pooling") == "task logits"
  title = f"{config['model']} {config['variant']}"
  output = (f"task logits for {', '.join(emb.get('labels', []))}" if task
            else f"a {emb.get('dim')}-dimensional embedding")
  lines = [
      "---", "library_name: ecgjax", "tags: [ecg, electrocardiogram, jax, flax]",
      "---", "",
      f"# {title} ({'classifier' if task else 'encoder'}, ecgjax export)", "",
      "An export of ecgjax (ECG foundation models in JAX/Flax): the model, its "
      "weights and the input contract its records are brought to.", "",
      "```python", "import ecgjax",
      'export = ecgjax.from_pretrained("PATH_OR_REPO_ID")  # a local directory or a Hub repo',
      "```", "",
      "Without the model code (only jax; `serving/` holds the embedding function as "
      "StableHLO for CPU and CUDA, when present):", "",
      "```python", "from ecgjax import serve",
      'embeddings = serve.load("PATH")(x)  # x: (N, *input shape) brought to the contract',
      "```", "",
      "```bash",
      "python finetune/embed.py --export PATH --data SPEC --out emb.npz   # embeddings",
      "python finetune/probe.py --export PATH --train SPEC --test SPEC     # a linear probe",
      "```", "",
      "## Architecture", "",
      f"- module `{enc['module']}`, variant `{config['variant']}`"
      + (f", overrides {_value(enc['overrides'])}" if enc.get("overrides") else ""),
      f"- parameters: {_count(params):,}",
      f"- output: {output} ({emb.get('pooling')})",
  ]
  if config.get("collections"):
    lines.append(f"- other variables: {', '.join(config['collections'])}")
  lines += ["", "## Input contract", "",
            "Records are brought to this by `ecgjax.data` automatically (any rate, length "
            "and lead order in).", "", "| key | value |", "|---|---|"]
  lines += [f"| {k} | {_value(v)} |" for k, v in sorted(config["input"].items())]
  lines += ["", "## Training", ""]
  if origin:
    lines.append(f"Converted from the published `{origin.get('source')}` weights"
                 + (f" (checkpoint sha256 `{origin['checkpoint_sha256']}`)"
                    if origin.get("checkpoint_sha256") else "")
                 + f": {origin.get('converted_keys', '?')} tensors converted, "
                 f"{len(origin.get('kept_at_random_init', []))} kept at random init.")
  if training:
    lines += ["| key | value |", "|---|---|"]
    lines += [f"| {k} | {_value(v)} |" for k, v in sorted(training.items())]
  if not origin and not training:
    lines.append("Not recorded.")
  lines += ["", "## Metrics", ""]
  if metrics:
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |"
              for k, v in sorted(metrics.items())]
  else:
    lines.append("None recorded in the export; `finetune/probe.py` and `python -m "
                 "ecgjax.benchmark` measure it.")
  lines += ["", "## Licence", ""]
  if origin:
    lines.append(origin.get("licence") or
                 "The weights are converted from a published checkpoint: its publisher's "
                 "terms apply to them and to this export.")
  else:
    lines.append("Weights trained with ecgjax (Apache-2.0 code); the terms of the training "
                 "data apply to what is derived from it (PTB-XL: CC BY 4.0).")
  lines += ["", f"Written by ecgjax {config.get('ecgjax_version', '?')}, export format "
            f"{config['format_version']}.", ""]
  return "\n".join(lines)


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
  """A variables file of the export (safetensors or msgpack), its checksum verified."""
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
    if name.endswith(".safetensors"):
      return _unblob(blob)
    return flax.serialization.msgpack_restore(blob)
  except Exception as e:  # pylint: disable=broad-except
    kind = "safetensors" if name.endswith(".safetensors") else "msgpack"
    raise ExportError(f"{path} is not a readable {kind} file: {e}") from None
