"""Shared helpers for `configs/*.py`: every pretraining key declared once, the objective and
evaluator groups from their plug-ins, the input contract from its preset, and the `:k=v,flag`
argument parser. Config files compose these; none builds on another config file."""

from __future__ import annotations

from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from ecgjax import errors

# The shared PTB-XL pretraining array beside the checkout (configs' corpus=ptbxl250).
PTBXL250 = "npy:../shared/data/ptbxl-pretrain-250hz/signals.npy?fs=250"
CORPORA = ("synthetic", "ptbxl250")


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parse `k=v,flag` config arguments; every key must be declared in `defaults`.

  Values are coerced to the type of their default (a bare `flag` means True), so
  `configs/stmem.py:variant=S/75,runlocal` gives variant="S/75", runlocal=True.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    key = key.strip()
    if key not in defaults:
      raise ValueError(
          f"unknown config argument {key!r} in {arg!r}; known: {sorted(defaults)}")
    default = defaults[key]
    if not _:  # bare flag
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise ValueError(f"config argument {key!r} expects a boolean, got {value!r}")
      out[key] = value.lower() in ("1", "true", "yes")
    elif default is None:
      out[key] = value
    else:
      out[key] = type(default)(value)
  return ml_collections.ConfigDict(out)


def sibling_config(this_file: str, name: str):
  """Imports `configs/<name>.py` beside `this_file` (config files are loaded by path, not as
  a package): for a config that offers another's recipes under its own names."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  path = os.path.join(os.path.dirname(os.path.abspath(this_file)), f"{name}.py")
  spec = importlib.util.spec_from_file_location(f"ecgjax_config_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def evaluator(kind: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.evals.<name>` for the evaluator plug-in `kind` (ecgjax/eval/evaluators/<kind>.py):
  its keys and defaults as the plug-in declares them (once, in its DEFAULTS), then `overrides`."""
  from ecgjax import registry  # pylint: disable=g-import-not-at-top
  module = registry.load("ecgjax.eval.evaluators", kind, "evaluator type")
  defaults = dict(module.Evaluator.DEFAULTS)
  errors.check_keys(f"evaluator {kind!r}", overrides, defaults)
  return ml_collections.ConfigDict({**defaults, **overrides, "type": kind})


def objective(name: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.<name>` for objective `name`: its keys and defaults as its module declares them
  (once, in the DEFAULTS it registers with), then `overrides`."""
  from ecgjax import objectives  # pylint: disable=g-import-not-at-top
  defaults = objectives.defaults(name)
  errors.check_keys(f"objective {name!r}", overrides, defaults)
  return ml_collections.ConfigDict({**defaults, **overrides})


def set_objective(c: ml_collections.ConfigDict, name: str, model: str,
                  **overrides: Any) -> ml_collections.ConfigDict:
  """Sets `c.objective = name`, `c.model` and the group `c.<name>`; each of the group's keys
  also answers under its old flat name (`c.mask_ratio` IS `c.mae.mask_ratio`: either spelling
  on the command line sets both), so the flags users already pass keep working."""
  c.objective, c.model = name, model
  c[name] = objective(name, **overrides)
  for key in c[name]:
    c[key] = c[name].get_ref(key)
  return c


def input_contract(preset: str, **overrides: Any) -> ml_collections.ConfigDict:
  """`config.input` from a reference preprocessing preset (ecgjax.contract; each field is
  documented there) with `overrides`. Unset optional fields stay settable from flags."""
  from ecgjax import contract  # pylint: disable=g-import-not-at-top
  fields = contract.preset(preset).to_dict()
  errors.check_keys("Preprocessing", overrides, fields)
  fields.update(overrides)
  typed = {"notch": float, "baseline_window_s": float, "head_s": float, "bandpass": tuple}
  out = ml_collections.ConfigDict()
  for key, value in fields.items():
    if value is None and key in typed:
      out[key] = placeholder(typed[key])
    else:
      out[key] = tuple(value) if isinstance(value, list) else value
  return out


def pretraining(variant: str) -> ml_collections.ConfigDict:
  """Every key a pretraining run reads besides the objective's group and `input`, declared
  here once with ST-MEM's published recipe as the defaults; config files change values only."""
  c = ml_collections.ConfigDict()
  c.seed = 0                      # params, masking noise and data order all derive from it
  c.objective = ""                # ecgjax.objectives registry name (set_objective)
  c.model = ""                    # ecgjax.models registry name
  c.variant = variant             # size by name: mu (tests) ... B/75, base
  c.dtype = "float32"             # compute dtype: float32 or bfloat16 (params stay float32)
  c.remat = "none"                # none | block | dots_saveable | full: recompute in backward

  # Data: any data spec (FORMAT:PATH?k=v&...); the default is the built-in generator.
  c.data = "synthetic:20000?seed=0&fs=250&seconds=10"
  c.data_workers = 8              # grain worker processes per host (0 = in the main process)
  c.max_bad_fraction = 0.01       # unreadable records are skipped; past this fraction, stop
  c.augment = "none"              # none | st_mem_randaugment (after standardisation, in workers)
  c.input = input_contract("st_mem")  # the input contract, recorded in the export

  # Optimisation: AdamW(0.9, 0.95), lr = base_lr * batch_size / 256, warmup then cosine.
  c.batch_size = 256              # global, over all devices and hosts
  c.total_steps = 100_000
  c.warmup_steps = 5_000
  c.optimizer = "adamw"
  c.base_lr = 1.5e-4
  c.min_lr_ratio = 0.0            # cosine floor as a fraction of the peak
  c.b1 = 0.9
  c.b2 = 0.95
  c.adam_eps = 1e-8
  c.weight_decay = 0.01           # decoupled (AdamW)
  c.weight_decay_scope = "matrices"  # matrices and tables, not biases/norms/vectors | all
  c.grad_clip_norm = 0.0          # 0 = no clipping
  c.grad_accum_steps = 1          # micro-batches per update (batch_size stays global)
  c.param_sharding = "replicated"  # or "fsdp": each array split over the devices

  # Bookkeeping.
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.vis_every_steps = 5000        # MAE reconstruction picture in WORKDIR/plots (0 = off)
  c.export_at_end = True          # WORKDIR/export for finetune/ scripts
  # Evaluators during training (ecgjax/eval/evaluators/<type>.py; keys declared there): rows
  # eval/<name>/<key> in metrics.jsonl. The linear probe is off until given labelled data:
  #   --config.evals.probe.train='ptbxl:DIR?folds=1-6'
  #   --config.evals.probe.test='ptbxl:DIR?folds=7-8'
  #   --config.evals.probe.every_steps=1000 (0: only after the last step)
  c.evals = ml_collections.ConfigDict()
  c.evals.probe = evaluator("linear_probe")
  # Continue pretraining a published model: its WHOLE pretraining model (ST-MEM's MAE, ECG-FM's
  # wav2vec 2.0 heads) from a PyTorch checkpoint, every key accounted for (init_from_report.json).
  c.init_from = ""                # path of the .pth / .pt; "" = random init
  c.init_from_format = ""         # st-mem | ecg-fm; "" = read off the checkpoint's keys
  return c


def use_corpus(c: ml_collections.ConfigDict, corpus: str) -> bool:
  """Points `c.data` at a named corpus ('synthetic' leaves it); True for a stored corpus."""
  if corpus not in CORPORA:
    raise ValueError(f"corpus={corpus!r}: known corpora are {', '.join(CORPORA)}")
  if corpus == "ptbxl250":
    # Already 0.5-40 Hz band-passed and z-scored per lead before it was resampled to 250 Hz.
    # The contract says so, so the export tells probes to bring raw records to the same
    # distribution; re-applying both steps to this data changes it negligibly.
    c.data = PTBXL250
    c.input.bandpass = (0.5, 40.0)
    c.input.standardize = "per_lead"
  return corpus != "synthetic"


def runlocal(c: ml_collections.ConfigDict, **values: Any) -> ml_collections.ConfigDict:
  """The laptop-size run (a few minutes on 2 cores): in-process data, frequent logs and
  checkpoints, then the config's own `values` (batch, steps, lr, data)."""
  c.data_workers = 0
  c.log_every_steps = 25
  c.checkpoint_every_steps = 100
  for key, value in values.items():
    if key not in c:
      raise KeyError(f"runlocal: {key!r} is not a config key")
    c[key] = value
  return c
