"""Runs the benchmark plan: per export and task, the splits, the embeddings (once, cached), and
each mode's test predictions, scored and written as soon as they exist (so a rerun resumes)."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import math
import os
import re
from typing import Any

from absl import logging
import numpy as np

from ecgjax import cli
from ecgjax import data as data_lib
from ecgjax import export as export_lib
from ecgjax.data.formats import ptbxl
from ecgjax.errors import UserError
from ecgjax.eval import attention_probe
from ecgjax.eval import embed as embed_lib
from ecgjax.eval import predictions as pred_lib
from ecgjax.eval import probes
from ecgjax.eval import report as report_lib
from ecgjax.finetune import splits as splits_lib

MODES = ("linear", "attention", "finetune")
QUICK_TASKS = ("superdiagnostic", "form", "rhythm")
# Superdiagnostic macro AUROC on PTB-XL's test fold, 100% of labels, from the uniform
# foundation-model benchmark (Al-Masud, Lopez Alcaraz and Strodthoff, ICLR 2026; SPEC section
# 11): Lin = linear, Frz = attention pooling, FT = fine-tune. CIs about +-0.007.
PUBLISHED_TASK = "superdiagnostic"
PUBLISHED: dict[str, dict[str, float]] = {
    "ECGFounder": {"linear": 0.924, "attention": 0.928, "finetune": 0.935},
    "ECG-JEPA": {"linear": 0.911, "attention": 0.917, "finetune": 0.921},
    "ST-MEM": {"linear": 0.896, "attention": 0.923, "finetune": 0.901},
    "MERL": {"linear": 0.887, "attention": 0.915, "finetune": 0.930},
    "HuBERT-ECG": {"linear": 0.877, "attention": 0.892, "finetune": 0.908},
    "ECG-FM": {"linear": 0.873, "attention": 0.877, "finetune": 0.916},
}
_PUBLISHED_NAME = {"st_mem": "ST-MEM", "ecg_fm": "ECG-FM"}


class BenchmarkError(UserError, ValueError):
  """A benchmark request that cannot run (unknown task or mode, data that is not PTB-XL)."""


@dataclasses.dataclass
class Plan:
  """What to run; `quick` is the README's short version (see __main__)."""
  exports: list[str]
  data: str
  out: str
  tasks: tuple[str, ...] = ptbxl.TASKS
  modes: tuple[str, ...] = MODES
  cv_folds: int = 5
  val_fraction: float = 0.2
  seed: int = 0
  bootstrap: int = 1000
  batch_size: int = 64
  attention_epochs: int = 30
  finetune_epochs: int = 10
  finetune_batch_size: int = 32
  finetune_peak_lr: float = 1e-3  # after warmup (the fine-tune row of the README's table)
  layer_decay: float = 0.75

  def check(self) -> None:
    """Unknown tasks or modes, or data that is not PTB-XL: a BenchmarkError naming them."""
    bad = [t for t in self.tasks if t not in ptbxl.TASKS]
    if bad:
      raise BenchmarkError(f"--tasks: unknown {bad}; the PTB-XL tasks are "
                           f"{', '.join(ptbxl.TASKS)}")
    bad = [m for m in self.modes if m not in MODES]
    if bad:
      raise BenchmarkError(f"--modes: unknown {bad}; the modes are {', '.join(MODES)}")
    if not self.data.startswith("ptbxl:"):
      raise BenchmarkError(f"--data={self.data!r}: the benchmark's tasks are PTB-XL's "
                           "(ptbxl:DIR)")
    if "labels=" in self.data:
      raise BenchmarkError(f"--data={self.data!r}: leave labels= out, each task sets it")
    if not self.exports:
      raise BenchmarkError("give at least one --export")


def task_spec(data: str, task: str) -> str:
  """The data spec of one task: `ptbxl:DIR?...&labels=TASK`."""
  return f"{data}{'&' if '?' in data else '?'}labels={task}"


def published_for(export: export_lib.Export) -> str | None:
  """The uniform benchmark's name for this export's model, when it has published numbers."""
  training = export.config.get("training") or {}
  if training.get("random_init"):  # a random encoder is no one's published model
    return None
  origin = training.get("converted_from") or {}
  if origin.get("source") == "ecgfounder":
    return "ECGFounder"
  return _PUBLISHED_NAME.get(str(export.config.get("model")))


def model_key(export: export_lib.Export) -> str:
  """A directory name for an export: model, variant and the start of its params' sha256."""
  name = f"{export.config['model']}_{export.config['variant']}"
  return re.sub(r"[^A-Za-z0-9._-]+", "-", name) + "_" + export.config["params_sha256"][:8]


def make_splits(source: Any, plan: Plan) -> tuple[list[splits_lib.Split], dict[str, Any]]:
  """The standard split when folds 9 and 10 exist, else grouped CV; and how, for the results."""
  meta = source.metadata()
  folds = set(np.asarray(meta["fold"]).tolist())
  good = np.arange(len(source))
  if {9, 10} <= folds:
    how = {"split": "standard", "note": "train folds 1-8, validation 9, test 10"}
    return splits_lib.make_splits(meta, good, split="folds", test_folds=(10,),
                                  val_folds=(9,)), how
  how = {"split": "groupcv",
         "note": (f"the data has no folds 9 and 10 (folds {sorted(folds)}): patient-grouped "
                  f"{plan.cv_folds}-fold CV, {plan.val_fraction:.0%} of each training side's "
                  "patients for validation, every record tested once")}
  return splits_lib.make_splits(meta, good, split="groupcv", n_folds=plan.cv_folds,
                                val_fraction=plan.val_fraction, seed=plan.seed), how


def _embeddings(export: export_lib.Export, source: Any, plan: Plan, path: str,
                tokens: bool) -> dict[str, np.ndarray]:
  if os.path.isfile(path):
    d = embed_lib.load_embeddings(path)
    if not tokens or "tokens" in d:
      return d
  d = embed_lib.embed_source(export, source, batch_size=plan.batch_size, progress=False,
                             n_crops=embed_lib.default_n_crops(export, source), tokens=tokens)
  embed_lib.save_embeddings(path, d)
  return d


def _rows(d: dict[str, np.ndarray], source_ids: np.ndarray, idx: np.ndarray) -> np.ndarray:
  """Rows of the embeddings dict for source indices (records that could not be read drop)."""
  row_of = {r: i for i, r in enumerate(d["record_id"])}
  return np.asarray([row_of[r] for r in source_ids[idx] if r in row_of], np.int64)


def _predictions(d: dict[str, np.ndarray], parts: list[tuple[int, np.ndarray, np.ndarray]],
                 label_names) -> pred_lib.Predictions:
  """Test rows of every split with their probabilities."""
  rows = np.concatenate([r for _, r, _ in parts])
  p = np.concatenate([q for _, _, q in parts]).astype(np.float32)
  cv = np.concatenate([np.full(len(r), k) for k, r, _ in parts]).astype(np.int64)
  return pred_lib.Predictions(d["record_id"][rows], d["patient_id"][rows], d["fold"][rows],
                              np.zeros(len(rows), np.int64), cv, d["labels"][rows], p,
                              tuple(label_names))


def run_linear(d, ids, splits, plan) -> pred_lib.Predictions:
  """The logistic probe on the pooled embedding, fitted on train + validation."""
  parts = []
  for s in splits:
    fit = _rows(d, ids, np.concatenate([s.train, s.val]))
    test = _rows(d, ids, s.test)
    p = probes.fit_predict_logreg(d["embeddings"][fit], d["labels"][fit],
                                  d["embeddings"][test], seed=plan.seed,
                                  label_names=[str(n) for n in d["label_names"]],
                                  on_single_class="nan", groups=d["patient_id"][fit])
    parts.append((s.index, test, p))
  return _predictions(d, parts, d["label_names"])


def run_attention(d, ids, splits, plan) -> pred_lib.Predictions:
  """The attention-pooling probe on the tokens, its epoch chosen on validation."""
  parts = []
  tok, mask = d["tokens"], d.get("token_mask")
  for s in splits:
    tr, va, te = (_rows(d, ids, i) for i in (s.train, s.val, s.test))
    m = (lambda r: None) if mask is None else (lambda r: mask[r])
    res = attention_probe.fit_predict_attention(
        tok[tr], d["labels"][tr], tok[va], d["labels"][va], tok[te], mask_train=m(tr),
        mask_val=m(va), mask_test=m(te), epochs=plan.attention_epochs, seed=plan.seed)
    parts.append((s.index, te, res.p_test))
  return _predictions(d, parts, d["label_names"])


def _finetune_config(export_dir: str, spec: str, how: dict[str, Any], plan: Plan):
  path = cli.builtin_config("finetune")
  if path is None:  # an install that lost its package data
    raise BenchmarkError("--modes finetune needs the config file configs/finetune.py, which "
                         "ships with ecgjax (ecgjax._configs) and was not found; reinstall "
                         "ecgjax, or drop finetune from --modes")
  module_spec = importlib.util.spec_from_file_location("ecgjax_finetune_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  c = module.get_config("backbone=export")
  c.export, c.data, c.mode, c.seed = os.path.abspath(export_dir), spec, "full", plan.seed
  c.layer_decay = plan.layer_decay
  c.augment, c.paired = "none", False  # the encoder alone is compared, not augmentation
  c.epochs, c.batch_size = plan.finetune_epochs, plan.finetune_batch_size
  # The trainer scales base_lr by batch / 256; the peak is what is compared across batch sizes.
  c.base_lr = plan.finetune_peak_lr * 256 / plan.finetune_batch_size
  c.bootstrap = 50  # the benchmark scores the predictions itself
  if how["split"] == "standard":
    c.split, c.test_folds, c.val_folds = "folds", "10", "9"
  else:
    c.split, c.cv_folds, c.val_fraction = "groupcv", plan.cv_folds, plan.val_fraction
    c.split_seed = plan.seed
  return c


def run_finetune(export_dir: str, source: Any, spec: str, how: dict[str, Any], plan: Plan,
                 workdir: str) -> pred_lib.Predictions:
  """Fine-tunes the whole encoder with a new head on the same splits; its test predictions."""
  from ecgjax.finetune import trainer  # pylint: disable=g-import-not-at-top
  trainer.finetune(_finetune_config(export_dir, spec, how, plan), workdir, source=source)
  return pred_lib.read_csv(os.path.join(workdir, "predictions.csv"))


def score(pred: pred_lib.Predictions, plan: Plan) -> dict[str, Any]:
  """Macro AUROC with its bootstrap 95% CI (patients resampled when they repeat)."""
  r = report_lib.build(pred, n_bootstrap=plan.bootstrap, seed=plan.seed)
  return {"macro_auroc": r["macro_auroc"], "macro_auroc_ci": r.get("macro_auroc_ci"),
          "n_records": r["n_records"], "labels": len(pred.label_names),
          "labels_scored": sum(1 for v in r["per_label"].values()
                               if math.isfinite(v.get("auroc", math.nan)))}


def run_benchmark(plan: Plan) -> dict[str, Any]:
  """Runs (or resumes) every (export, task, mode); writes OUT/results.json and results.md."""
  plan.check()
  os.makedirs(plan.out, exist_ok=True)
  exports = [export_lib.load_export(e) for e in plan.exports]
  for exp in exports:
    embed_lib.check_export(exp)
    if exp.modality != "signal":
      raise BenchmarkError(f"{exp.directory} takes images; the PTB-XL benchmark feeds signals")
  results: dict[str, Any] = {"data": plan.data, "tasks": list(plan.tasks),
                             "modes": list(plan.modes), "models": {}}
  for exp in exports:
    key = model_key(exp)
    entry = results["models"].setdefault(key, {"export": exp.directory,
                                               "published_as": published_for(exp),
                                               "tasks": {}})
    for task in plan.tasks:
      spec = task_spec(plan.data, task)
      source = data_lib.open_source(spec)
      splits, how = make_splits(source, plan)
      ids = source.metadata()["record_id"]
      base = os.path.join(plan.out, "runs", key, task)
      os.makedirs(base, exist_ok=True)
      cell = entry["tasks"].setdefault(task, {**how, "records": len(source)})
      d = None
      for mode in plan.modes:
        done = os.path.join(base, f"{mode}.json")
        if os.path.isfile(done):
          with open(done) as f:
            cell[mode] = json.load(f)
          logging.info("%s %s %s: done before (%s)", key, task, mode, done)
          continue
        if mode in ("linear", "attention") and (d is None or (mode == "attention"
                                                              and "tokens" not in d)):
          d = _embeddings(exp, source, plan, os.path.join(base, "embeddings.npz"),
                          tokens="attention" in plan.modes)
        if mode == "linear":
          pred = run_linear(d, ids, splits, plan)
        elif mode == "attention":
          pred = run_attention(d, ids, splits, plan)
        else:
          pred = run_finetune(exp.directory, source, spec, how, plan,
                              os.path.join(base, "finetune"))
        pred_lib.write_csv(os.path.join(base, f"{mode}_predictions.csv"), pred)
        cell[mode] = score(pred, plan)
        with open(done, "w") as f:
          json.dump(report_lib.json_safe(cell[mode]), f, indent=2)
        logging.info("%s %s %s: macro AUROC %.3f", key, task, mode, cell[mode]["macro_auroc"])
        write_results(results, plan.out)
  write_results(results, plan.out)
  return results


def _finite(v: Any) -> bool:
  return isinstance(v, (int, float)) and math.isfinite(v)


def _cell(r: dict[str, Any] | None) -> str:
  """"0.812 [0.790-0.833]"; "-" where undefined (a task whose test labels hold one class)."""
  if not r or not _finite(r.get("macro_auroc")):
    return "-"
  ci = r.get("macro_auroc_ci") or [None, None]
  if not all(_finite(c) for c in ci):
    return f"{r['macro_auroc']:.3f}"
  return f"{r['macro_auroc']:.3f} [{ci[0]:.3f}-{ci[1]:.3f}]"


def markdown(results: dict[str, Any]) -> str:
  """results.md: one table per model (tasks x modes), the published numbers beside ours."""
  modes = results["modes"]
  lines = [f"# PTB-XL benchmark: {results['data']}", "",
           "Macro AUROC on the test records [patient bootstrap 95% CI]."]
  for key, entry in results["models"].items():
    lines += ["", f"## {key}", "", f"export: `{entry['export']}`", ""]
    lines += ["| task | split | records | " + " | ".join(modes) + " |",
              "|---|---|---|" + "---|" * len(modes)]
    for task, cell in entry["tasks"].items():
      lines.append(f"| {task} | {cell['split']} | {cell['records']} | "
                   + " | ".join(_cell(cell.get(m)) for m in modes) + " |")
    name = entry.get("published_as")
    if name:
      pub = PUBLISHED[name]
      lines += ["", f"Published for {name}'s official weights (uniform benchmark, "
                f"{PUBLISHED_TASK}, full PTB-XL test fold): "
                + ", ".join(f"{m} {pub[m]:.3f}" for m in modes if m in pub)]
    notes = {cell["note"] for cell in entry["tasks"].values()}
    lines += [""] + [f"Split: {n}." for n in sorted(notes)]
  return "\n".join(lines) + "\n"


def write_results(results: dict[str, Any], out: str) -> None:
  """OUT/results.json and OUT/results.md (rewritten after every finished cell)."""
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(report_lib.json_safe(results), f, indent=2)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(markdown(results))


def random_export(out: str, seed: int = 0) -> str:
  """A randomly initialised `mu` ST-MEM encoder export (the --quick baseline), cached."""
  path = os.path.join(out, "random_st_mem_mu_export")
  if os.path.isfile(os.path.join(path, export_lib.CONFIG_FILE)):
    return path
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax import contract as contract_lib  # pylint: disable=g-import-not-at-top
  from ecgjax import models  # pylint: disable=g-import-not-at-top
  module = models.build_model("st_mem_encoder", "mu")
  pp = contract_lib.preset("st_mem")
  params = jax.jit(module.init)(jax.random.PRNGKey(seed),
                                np.zeros((1, 12, pp.samples), np.float32))["params"]
  digest = hashlib.sha256(str(seed).encode()).hexdigest()[:8]
  return export_lib.save_export(
      path, params, {"model": "st_mem", "variant": "mu", "module": "st_mem_encoder",
                     "overrides": {}, "embedding": {"dim": 64,
                                                    "pooling": "mean_patch_tokens_then_norm"}},
      pp.to_dict(), training={"random_init": True, "seed": seed, "id": digest})
