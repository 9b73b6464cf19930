"""Frozen-encoder embeddings of a whole source, and their NPZ file format.

`embed_source` brings every record to the export's input contract (its `Preprocessing`),
runs the encoder in fixed-size jitted batches (the last batch is padded, so one shape
compiles once) and, with `n_crops > 1`, averages the embeddings of the crops (ST-MEM
evaluates 3 crops of 2250 samples at starts 0/125/250 of a 2500-sample record).

`default_n_crops` follows the model's reference evaluation: ST-MEM exports get 3 crops when
the source's records are longer than the contract's window (a 2500-sample record at 250 Hz
against 2250), else 1; other models get 1. Records no longer than the window give identical
crops, whose mean is the single-crop embedding, so the choice per source equals the
per-record rule. A contract with views="segments" (ECG-FM's) ignores the crop count: every
record is embedded as the mean over ALL its non-overlapping segments, however many.

Embedding files are NPZ with exactly the keys of `EMBEDDING_KEYS`, strings stored as
unicode arrays so they load with `allow_pickle=False`.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging
from jax.sharding import Mesh

from ecgjax import data as data_lib
from ecgjax import leads as leads_lib
from ecgjax import tree as tree_lib
from ecgjax.train import mesh as mesh_lib

EMBEDDING_KEYS: tuple[str, ...] = (
    "embeddings", "record_id", "patient_id", "fold", "labels", "label_names")
# Written by `finetune/embed.py --tokens`: the attention-pooling probe's input.
TOKEN_KEYS: tuple[str, ...] = ("tokens", "token_mask")


def lead_idx_of(export: Any) -> tuple[int, ...] | None:
  """Canonical lead indices when the contract feeds a lead subset (or another order)."""
  leads = export.config["input"].get("leads")
  if not leads:
    return None
  names = leads_lib.parse_leads(leads)
  return None if names == leads_lib.LEADS_12 else tuple(leads_lib.lead_indices(names).tolist())


def _encoder_apply(module_name: str, variant: str, overrides_json: str,
                   lead_idx: tuple[int, ...] | None,
                   tokens: bool = False) -> Callable[..., Any]:
  """`(variables, x (B, views, *input), view_mask (B, views) | None) -> (B, dim)` (not
  jitted): the mean of each record's real views; input (leads, T) signals or (H, W, C)
  pictures. `variables`: {"params", **collections}. With `tokens`, also the encoder's token
  sequences (aux["tokens"]) of every view one after the other, (B, views * N, D) float16, and
  their mask (B, views * N): a view the record does not have is masked out."""
  from ecgjax import models  # pylint: disable=g-import-not-at-top
  module = models.build_model(module_name, variant, **json.loads(overrides_json))
  kwargs = {}
  if lead_idx is not None:
    if not models.has_lead_table(module):
      raise ValueError(f"the export's contract feeds leads {lead_idx} (a subset or another "
                       f"order of the 12) but {module_name} has no lead table")
    kwargs["lead_idx"] = np.asarray(lead_idx, np.int32)

  def fn(variables, x, view_mask=None):
    b, c = x.shape[:2]
    emb, aux = module.apply(variables, x.reshape((b * c,) + x.shape[2:]), **kwargs)
    emb = emb.astype(jnp.float32).reshape(b, c, -1)
    if view_mask is None:
      pooled = emb.mean(1)
    else:
      w = view_mask.astype(jnp.float32)[..., None]
      pooled = (emb * w).sum(1) / jnp.maximum(w.sum(1), 1.0)
    if not tokens:
      return pooled
    tok = aux["tokens"]
    n, d = tok.shape[1], tok.shape[2]
    tok = tok.reshape(b, c * n, d).astype(jnp.float16)
    vm = jnp.ones((b, c), bool) if view_mask is None else view_mask.astype(bool)
    return pooled, tok, jnp.repeat(vm, n, axis=1)

  return fn


@functools.lru_cache(maxsize=8)
def _cached_embed_fn(module_name: str, variant: str, overrides_json: str,
                     lead_idx: tuple[int, ...] | None):
  # Keyed by the encoder description, not the Export object, so embedding the train and
  # the test split with one export compiles once; params are an argument, not a constant.
  return jax.jit(_encoder_apply(module_name, variant, overrides_json, lead_idx))


def make_embed_fn(export: Any) -> Callable[..., jax.Array]:
  """Jitted `(variables, x (B, views, leads, samples), view_mask (B, views) | None) -> (B, dim)`:
  the mean of each record's real views (crops or segments), on the default device."""
  enc = export.config["encoder"]
  return _cached_embed_fn(enc["module"], export.config["variant"],
                          json.dumps(enc.get("overrides", {}), sort_keys=True),
                          lead_idx_of(export))


def mesh_embed_fn(module_name: str, variant: str, overrides_json: str,
                  lead_idx: tuple[int, ...] | None, mesh: Mesh,
                  tokens: bool = False) -> Callable[..., Any]:
  """The embedding function jitted for `mesh`: batch rows split over its devices, the
  embeddings (and with `tokens` the token sequences) returned replicated (every process can
  read them); params keep their sharding."""
  return jax.jit(_encoder_apply(module_name, variant, overrides_json, lead_idx, tokens),
                 out_shardings=mesh_lib.replicated(mesh))


def mesh_batch_size(requested: int, mesh: Mesh) -> int:
  """`requested` rows rounded up to a multiple of the mesh's device count (>= one per device)."""
  n = mesh.devices.size
  return max(n, -(-int(requested) // n) * n)


def embed_batches(fn: Callable[..., jax.Array], variables: Any,
                  batches: Iterable[dict[str, Any]],
                  mesh: Mesh, *, progress: Any = None) -> dict[str, np.ndarray]:
  """Embeds eval batches (`data.eval_batches`, rows a multiple of the mesh's devices) on the
  mesh: every process holds the same batch and feeds its slice of the rows; returns the
  valid rows' embeddings with their record_id, patient_id, fold and labels."""
  n_proc, proc = jax.process_count(), jax.process_index()
  pending = []
  for batch in batches:
    key = data_lib.batch.model_input_key(batch)  # signal, or pixels for printouts
    rows = batch[key].shape[0]
    local = rows // n_proc
    part = {k: batch[k][proc * local:(proc + 1) * local] for k in (key, "view_mask")}
    part = mesh_lib.to_global(part, mesh)
    # Dispatch is asynchronous: the encoder runs while the next batch is being loaded;
    # results are read back after the loop.
    pending.append((fn(variables, part[key], part["view_mask"]), batch))
    if progress is not None:
      progress.update(int(batch["valid"].sum()))
  out: dict[str, list[np.ndarray]] = {k: [] for k in ("embeddings", "record_id", "patient_id",
                                                      "fold", "labels")}
  for emb, batch in pending:
    valid = batch["valid"]
    if isinstance(emb, tuple):  # (embeddings, tokens, token_mask)
      emb, tok, tmask = emb
      out.setdefault("tokens", []).append(np.asarray(jax.device_get(tok))[valid])
      out.setdefault("token_mask", []).append(np.asarray(jax.device_get(tmask))[valid])
    out["embeddings"].append(np.asarray(jax.device_get(emb), np.float32)[valid])
    for k in ("record_id", "patient_id", "fold", "labels"):
      out[k].append(batch[k][valid])
  if not out["embeddings"]:
    return {k: np.zeros((0,)) for k in out}
  return {k: np.concatenate(v) for k, v in out.items()}


# Crops the reference implementation of each model evaluates with (by export "model"). ECG-FM
# exports made before views="segments" existed score a 10 s record's two halves this way.
REFERENCE_N_CROPS: dict[str, int] = {"st_mem": 3, "ecg_fm": 2}


def default_n_crops(export: Any, source: Any, *, probe_records: int = 3) -> int:
  """The model's reference crop count if `source`'s records are longer than the window, else 1.

  Looks at the first, middle and last record (their length at the contract's sampling
  rate); records that fail to load are passed over.
  """
  n_ref = REFERENCE_N_CROPS.get(str(export.config.get("model")), 1)
  if n_ref == 1 or not len(source) or export.modality != "signal":
    return 1
  pp = data_lib.Preprocessing.of(export.contract)
  if pp.views == "segments":
    return 1
  picks = sorted({0, len(source) // 2, len(source) - 1})[:probe_records]
  for i in picks:
    try:
      rec = source[i]
    except data_lib.BadRecordError:
      continue
    if round(rec["signal"].shape[-1] * pp.fs / rec["fs"]) > pp.samples:
      return n_ref
  return 1


def preprocessing_of(export: Any) -> Any:
  """What brings a record to the export's input: `data.Preprocessing` of its signal contract,
  or `data.ImagePreprocessing` of its image contract (printouts)."""
  if export.modality == "image":
    return data_lib.ImagePreprocessing.from_dict(export.image_contract)
  return data_lib.Preprocessing.of(export.contract)


def check_export(export: Any) -> None:
  """Raises ValueError unless the export's params fit the encoder its config names.

  Catches exports of another model (or size) before any record is embedded: builds the
  module, traces its init on the contract's input shape and compares parameter paths and
  shapes.
  """
  where = f"export {export.directory}"
  try:
    module = export.module
  except (ValueError, TypeError, KeyError) as e:
    raise ValueError(f"{where} names an encoder this ecgjax cannot build: {e}") from None
  if export.modality == "image":
    ipp = data_lib.ImagePreprocessing.from_dict(export.image_contract)
    shape, what = (1, ipp.height, ipp.width, ipp.channels), "image contract"
  else:
    pp = data_lib.Preprocessing.of(export.contract)
    shape = (1, len(pp.leads), pp.samples)
    what = f"input contract ({len(pp.leads)} leads x {pp.samples} samples)"
  kwargs = {}
  idx = lead_idx_of(export)
  if idx is not None:
    kwargs["lead_idx"] = np.asarray(idx, np.int32)
  try:
    want = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), jnp.zeros(shape),
                                              **kwargs))
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"{where}: its encoder ({export.config['encoder']['module']} "
                     f"{export.config['variant']}) does not accept the {what}"
                     f": {e}") from None
  diff = tree_lib.compare(export.variables, want)
  if not diff.ok:
    raise ValueError(
        f"{where} is incompatible with the model its config names "
        f"({export.config['model']} {export.config['variant']}, module "
        f"{export.config['encoder']['module']}): {diff.summary()}")


def embed_source(export: Any, source: Any, *, batch_size: int = 64, n_crops: int = 1,
                 progress: bool = True, workers: int | None = None,
                 mesh: Mesh | None = None, tokens: bool = False) -> dict[str, np.ndarray]:
  """Embeds every record of `source` with `export`'s encoder on the mesh (default: every
  device); dict of `EMBEDDING_KEYS` arrays, with `tokens` also "tokens" (N, views * T, D)
  float16 and "token_mask" (N, views * T)."""
  n = len(source)
  if n == 0:
    raise ValueError(f"{source!r} holds no records to embed")
  if batch_size < 1 or n_crops < 1:
    raise ValueError(f"batch_size ({batch_size}) and n_crops ({n_crops}) must be >= 1")
  mesh = mesh_lib.make_mesh() if mesh is None else mesh
  # A set smaller than one batch compiles for its own size instead of padding up; every
  # device gets rows.
  batch_size = mesh_batch_size(min(batch_size, n), mesh)
  workers = min(8, os.cpu_count() or 1) if workers is None else workers
  enc = export.config["encoder"]
  fn = mesh_embed_fn(enc["module"], export.config["variant"],
                        json.dumps(enc.get("overrides", {}), sort_keys=True), lead_idx_of(export),
                     mesh, tokens)
  variables = jax.device_put(export.variables, mesh_lib.replicated(mesh))
  bad_before = data_lib.bad_record_count()
  bar = tqdm.tqdm(total=n, unit="rec", desc=f"embed {source!r}", leave=False,
                  disable=not (progress and sys.stderr.isatty()))
  batches = data_lib.eval_batches(source, preprocessing_of(export), batch_size=batch_size,
                                  n_crops=n_crops, num_threads=workers)
  with bar:
    d = embed_batches(fn, variables, batches, mesh, progress=bar)
  skipped = data_lib.bad_record_count() - bad_before
  if skipped:
    logging.warning("%s: %d bad record(s) skipped (see the warnings above); %d embedded",
                    source, skipped, n - skipped)
  if not len(d["embeddings"]):
    raise ValueError(f"{source!r}: no record could be embedded (all {n} were bad)")
  extra = {k: d[k] for k in ("tokens", "token_mask") if k in d}
  return {
      **extra,
      "embeddings": d["embeddings"].astype(np.float32),
      "record_id": d["record_id"].astype(str),
      "patient_id": d["patient_id"].astype(str),
      "fold": d["fold"].astype(np.int64),
      "labels": d["labels"].astype(np.float32),
      "label_names": np.array(tuple(source.label_names), dtype=str),
  }


def save_embeddings(path: str, d: dict[str, Any]) -> str:
  """Writes `d`'s `EMBEDDING_KEYS` to an NPZ file (no pickled objects); returns the path."""
  missing = [k for k in EMBEDDING_KEYS if k not in d]
  if missing:
    raise ValueError(f"embeddings dict lacks keys {missing}")
  arrays = {k: np.asarray(d[k]) for k in EMBEDDING_KEYS + TOKEN_KEYS if k in d}
  for k in ("record_id", "patient_id", "label_names"):
    arrays[k] = arrays[k].astype(str)
  n = arrays["embeddings"].shape[0]
  for k in ("record_id", "patient_id", "fold", "labels") + tuple(k for k in TOKEN_KEYS
                                                                 if k in arrays):
    if arrays[k].shape[0] != n:
      raise ValueError(f"{k} has {arrays[k].shape[0]} rows but embeddings have {n}")
  if not path.endswith(".npz"):
    path += ".npz"  # np.savez would append it anyway; return the real name
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  np.savez(path, **arrays)
  return path


def load_embeddings(path: str) -> dict[str, np.ndarray]:
  """Reads an NPZ written by `save_embeddings`; the error names any missing key."""
  with np.load(path, allow_pickle=False) as f:
    missing = [k for k in EMBEDDING_KEYS if k not in f.files]
    if missing:
      raise ValueError(f"{path} is not an ecgjax embeddings file: missing keys {missing} "
                       f"(expected {list(EMBEDDING_KEYS)})")
    return {k: f[k] for k in EMBEDDING_KEYS + TOKEN_KEYS if k in f.files}
