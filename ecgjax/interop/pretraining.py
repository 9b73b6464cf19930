"""Continue pretraining from a published checkpoint: the WHOLE pretraining model, not just the
encoder (`--config.init_from=PATH`, `--config.init_from_format=st-mem|ecg-fm`).

ST-MEM: the MAE (encoder, decoder blocks, decoder embedding / norm / head, the mask token and
both sin-cos tables) -> the "mae" objective's STMEM params. ECG-FM: the wav2vec 2.0 model
(encoder with mask_emb, quantizer.vars / weight_proj, project_q, final_proj) -> the "wav2vec2"
objective's ECGFM params. Every checkpoint key must land in the model and every model parameter
must come from the checkpoint, with the shapes the config's variant builds; otherwise the report
(the same `ConversionReport` as `convert`) lists each key and nothing is loaded. Users adapt
published models to their hospital's ECGs this way.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
from typing import Any

import numpy as np

from ecgjax.interop import conversion
from ecgjax.interop import ecg_fm as ecg_fm_lib
from ecgjax.interop import st_mem as st_mem_lib
from ecgjax.interop import state as state_lib
from ecgjax.errors import UserError

FORMATS = ("st-mem", "ecg-fm")
# The objective each format's pretraining model belongs to.
OBJECTIVES = {"st-mem": "mae", "ecg-fm": "wav2vec2"}
REPORT_FILE = "init_from_report.json"


class InitFromError(UserError, ValueError):
  """config.init_from / init_from_format that cannot be used; the message says why."""


def detect_format(state: Mapping[str, Any]) -> str:
  """"st-mem" or "ecg-fm" from a state dict's keys; ValueError naming what was found."""
  if "encoder.sep_embedding" in state or "sep_embedding" in state:
    return "st-mem"
  if ecg_fm_lib.ANCHOR in state or any(k.endswith(ecg_fm_lib.ANCHOR) for k in state):
    return "ecg-fm"
  raise InitFromError("cannot tell the checkpoint's format from its keys (neither ST-MEM's "
                      "sep_embedding nor ECG-FM's feature_extractor); first keys: "
                      f"{sorted(state)[:8]}; set config.init_from_format=st-mem|ecg-fm")


def pretraining_params(fmt: str, checkpoint: Mapping[str, Any], template: Any,
                       objective_name: str | None = None
                       ) -> tuple[dict[str, Any], conversion.ConversionReport]:
  """(params as NumPy, report) of a loaded checkpoint for the pretraining model `template`
  (the objective's param tree, arrays or ShapeDtypeStructs). fmt "" reads the format off the
  keys; objective_name, when given, must be the one that format continues with. Raises
  ConversionError (with the report) unless every key and every parameter is accounted for with
  matching shapes."""
  state, path, beside = state_lib.unwrap_checkpoint(checkpoint)
  if not fmt:
    fmt = detect_format(state)
  if fmt not in FORMATS:
    raise InitFromError(f"config.init_from_format={fmt!r}: known formats are "
                        f"{', '.join(FORMATS)}")
  if objective_name is not None and OBJECTIVES[fmt] != objective_name:
    raise InitFromError(f"the checkpoint is a {fmt} pretraining model, which continues with "
                        f"objective {OBJECTIVES[fmt]!r}; this config trains {objective_name!r}")
  report = conversion.ConversionReport(f"{fmt} pretraining model")
  report.weights_at, report.beside_weights = ".".join(path), beside
  if fmt == "st-mem":
    try:
      params, reader = st_mem_lib.read_full_model(state)
    except ValueError as e:  # the twice-registered patch embedding differs
      report.problems.append(str(e))
      raise conversion.ConversionError(report) from None
    if "encoder.sep_embedding" not in state:
      report.problems.append("this is an encoder-only checkpoint (no 'encoder.' prefix, no MAE "
                             "decoder): continue pretraining needs the full model; embed or "
                             "fine-tune it with `python -m ecgjax.interop convert` instead")
  else:
    meta = {k: v for k, v in checkpoint.items() if k in ("cfg", "args")}
    params, reader, problems = ecg_fm_lib.read_pretraining_model(state, meta)
    report.problems += problems
  _account(params, reader, state, template, report)
  if not report.ok:
    raise conversion.ConversionError(report)
  return params, report


def _account(params: Any, reader: state_lib.StateReader, state: Mapping[str, Any],
             template: Any, report: conversion.ConversionReport) -> None:
  """Fills the report: keys never used, parameters with no key, shapes that differ."""
  want = {p: tuple(np.shape(v)) for p, v in state_lib.flatten(template).items()}
  flat = state_lib.flatten(params)
  report.unexpected = sorted(set(state) - reader.used)
  report.missing = list(dict.fromkeys(reader.missing))
  for p, v in flat.items():
    if v is None:
      continue
    key = reader.origin.get(id(v), p)
    if p not in want:
      report.unexpected.append(f"{key} (the model has no {p})")
    elif tuple(np.shape(v)) != want[p]:
      report.shape_mismatch.append(f"{key}: checkpoint {tuple(np.shape(v))} -> {p} {want[p]} "
                                   "in the model (another size: set config.variant)")
  report.missing += [f"{p} (model parameter with no checkpoint key)" for p in want
                     if p not in flat]
  report.converted = len(reader.used)


def load(path: str, fmt: str, template: Any, objective_name: str
         ) -> tuple[dict[str, Any], conversion.ConversionReport]:
  """Reads checkpoint `path` (torch needed, weights_only) for `objective_name`'s model."""
  from ecgjax.interop import torch_io  # pylint: disable=g-import-not-at-top
  checkpoint = torch_io.load_checkpoint(path)
  if not isinstance(checkpoint, Mapping):
    raise torch_io.CheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a "
                                   "state dict or a dict around one")
  params, report = pretraining_params(fmt, checkpoint, template, objective_name)
  report.notes.append(f"checkpoint {os.path.abspath(path)} sha256 {torch_io.sha256_of(path)}")
  return params, report


def save_report(report: conversion.ConversionReport, workdir: str) -> str:
  """Writes WORKDIR/init_from_report.json; returns its path."""
  path = os.path.join(workdir, REPORT_FILE)
  with open(path, "w") as f:
    json.dump(report.to_dict(), f, indent=2, sort_keys=True)
  return path
