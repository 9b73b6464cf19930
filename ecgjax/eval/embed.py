"""Frozen-encoder embeddings of a whole source, and their NPZ file format.

`embed_source` brings every record to the export's input contract (its `Preprocessing`),
runs the encoder in fixed-size jitted batches (the last batch is padded, so one shape
compiles once) and, with `n_crops > 1`, averages the embeddings of the crops (ST-MEM
evaluates 3 crops of 2250 samples at starts 0/125/250 of a 2500-sample record).

Embedding files are NPZ with exactly the keys of `EMBEDDING_KEYS`, strings stored as
unicode arrays so they load with `allow_pickle=False`.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tqdm
from absl import logging

from ecgjax import data as data_lib
from ecgjax.data import leads as leads_lib

EMBEDDING_KEYS: tuple[str, ...] = (
    "embeddings", "record_id", "patient_id", "fold", "labels", "label_names")


def _lead_idx(export: Any) -> tuple[int, ...] | None:
  """Canonical lead indices when the contract feeds a lead subset (or another order)."""
  leads = export.config["input"].get("leads")
  if not leads:
    return None
  names = leads_lib.parse_leads(leads)
  return None if names == leads_lib.LEADS_12 else tuple(leads_lib.lead_indices(names).tolist())


@functools.lru_cache(maxsize=8)
def _cached_embed_fn(module_name: str, variant: str, overrides_json: str,
                     lead_idx: tuple[int, ...] | None):
  # Keyed by the encoder description, not the Export object, so embedding the train and
  # the test split with one export compiles once; params are an argument, not a constant.
  from ecgjax import models
  module = models.build_model(module_name, variant, **json.loads(overrides_json))
  kwargs = {}
  if lead_idx is not None:
    if "lead_idx" not in inspect.signature(type(module).__call__).parameters:
      raise ValueError(f"the export's contract feeds leads {lead_idx} (a subset or another "
                       f"order of the 12) but {module_name} takes no lead_idx")
    kwargs["lead_idx"] = np.asarray(lead_idx, np.int32)

  @jax.jit
  def fn(params, x):
    b, c = x.shape[:2]
    emb, _ = module.apply({"params": params}, x.reshape((b * c,) + x.shape[2:]), **kwargs)
    return emb.astype(jnp.float32).reshape(b, c, -1).mean(1)

  return fn


def make_embed_fn(export: Any):
  """Jitted `(params, x (B, n_crops, leads, samples)) -> (B, dim)`, crops averaged."""
  enc = export.config["encoder"]
  return _cached_embed_fn(enc["module"], export.config["variant"],
                          json.dumps(enc.get("overrides", {}), sort_keys=True),
                          _lead_idx(export))


def embed_source(export: Any, source: Any, *, batch_size: int = 64, n_crops: int = 1,
                 progress: bool = True, workers: int | None = None) -> dict[str, np.ndarray]:
  """Embeds every record of `source` with `export`'s encoder; dict of `EMBEDDING_KEYS` arrays."""
  n = len(source)
  if n == 0:
    raise ValueError(f"{source!r} holds no records to embed")
  if batch_size < 1 or n_crops < 1:
    raise ValueError(f"batch_size ({batch_size}) and n_crops ({n_crops}) must be >= 1")
  # A set smaller than one batch compiles for its own size instead of padding up.
  batch_size = min(batch_size, n)
  workers = min(8, os.cpu_count() or 1) if workers is None else workers
  fn = make_embed_fn(export)
  params = jax.device_put(export.params)
  bad_before = data_lib.bad_record_count()
  outputs, meta = [], {k: [] for k in ("record_id", "patient_id", "fold", "labels")}
  bar = tqdm.tqdm(total=n, unit="rec", desc=f"embed {source!r}", leave=False,
                  disable=not (progress and sys.stderr.isatty()))
  batches = data_lib.eval_batches(source, export.preprocessing, batch_size=batch_size,
                                  n_crops=n_crops, num_threads=workers)
  with bar:
    for batch in batches:
      # Dispatch is asynchronous: the encoder runs while the next batch is being loaded;
      # results are only read back after the loop.
      valid = batch["valid"]
      outputs.append((fn(params, batch["signal"]), valid))
      for k in meta:
        meta[k].append(batch[k][valid])
      bar.update(int(valid.sum()))
    embeddings = [np.asarray(o)[valid] for o, valid in outputs]
  skipped = data_lib.bad_record_count() - bad_before
  if skipped:
    logging.warning("%s: %d bad record(s) skipped (see the warnings above); %d embedded",
                    source, skipped, n - skipped)
  if not embeddings or sum(len(e) for e in embeddings) == 0:
    raise ValueError(f"{source!r}: no record could be embedded (all {n} were bad)")
  label_names = tuple(source.label_names)
  return {
      "embeddings": np.concatenate(embeddings).astype(np.float32),
      "record_id": np.concatenate(meta["record_id"]).astype(str),
      "patient_id": np.concatenate(meta["patient_id"]).astype(str),
      "fold": np.concatenate(meta["fold"]).astype(np.int64),
      "labels": np.concatenate(meta["labels"]).astype(np.float32),
      "label_names": np.array(label_names, dtype=str),
  }


def save_embeddings(path: str, d: dict[str, Any]) -> str:
  """Writes `d`'s `EMBEDDING_KEYS` to an NPZ file (no pickled objects); returns the path."""
  missing = [k for k in EMBEDDING_KEYS if k not in d]
  if missing:
    raise ValueError(f"embeddings dict lacks keys {missing}")
  arrays = {k: np.asarray(d[k]) for k in EMBEDDING_KEYS}
  for k in ("record_id", "patient_id", "label_names"):
    arrays[k] = arrays[k].astype(str)
  n = arrays["embeddings"].shape[0]
  for k in ("record_id", "patient_id", "fold", "labels"):
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
    return {k: f[k] for k in EMBEDDING_KEYS}
