"""The fine-tuning run: per split, an epoch loop on the pretraining engine, then predictions.

  data -> splits -> for each split (WORKDIR/split<k>/):
    train `epochs` epochs with the jitted engine step (mesh, AdamW, PCGrad combiner),
    after each epoch predict the VALIDATION records, keep the best state (orbax, best/),
    checkpoint state + data position (checkpoints/), log (metrics.jsonl, validation.jsonl);
    then restore the best state and predict the test records (and the external set).
  -> WORKDIR/predictions.csv (out-of-fold), predictions_external.csv (fold ensemble),
     results.json, and the report printed (macro AUROC with its bootstrap 95% CI);
     WORKDIR/split<k>/export: the validation-selected backbone as an ecgjax export (with its
     BatchNorm statistics; a Net1D/ResNet's is the whole classifier, its outputs the task
     logits, so `finetune/explain.py --export` and `finetune/embed.py` take it).

Rerunning the same command resumes: finished splits are read back from their predictions,
an unfinished one restores its newest checkpoint (state, data position, best-so-far).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ecgjax import data as data_lib
from ecgjax.errors import ConfigError
from ecgjax.data import augment as augment_lib
from ecgjax.eval import embed, protocols
from ecgjax.eval import predictions as pred_lib
from ecgjax.eval import report as report_lib
from ecgjax.finetune import data as ft_data
from ecgjax.finetune import load as load_lib
from ecgjax.eval import predict as evaluate
from ecgjax.finetune import splits as splits_lib
from ecgjax.objectives import classifier as model_lib
from ecgjax.objectives import supervised as objective_lib
from ecgjax import export as export_lib
from ecgjax.train import checkpoint as ckpt_lib
from ecgjax.train import hooks as hooks_lib
from ecgjax.train import loop as loop_lib
from ecgjax.train import mesh as mesh_lib
from ecgjax.train import step as step_lib

TEST_FILE = "predictions_test.csv"
EXTERNAL_FILE = "predictions_external.csv"
VALIDATION_FILE = "predictions_validation.csv"  # the selected model on its validation set


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


# A SIGTERM stopped the run after every process saved the same step (the loop's).
Preempted = loop_lib.Preempted


def make_augment(config: ml_collections.ConfigDict, fs: float) -> Any:
  """`config.augment` (`ecgjax.data.augment.build`): none; AnyECG-CCTA's scheduled
  augmentation; or ST-MEM's fine-tune RandAugment at the contract's rate `fs`."""
  return augment_lib.build(config.augment, fs)


class Run:
  """Everything shared by the splits of one fine-tuning run."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str, source=None,
               devices=None, external=None):
    self.config, self.workdir = config, workdir
    self.mesh = mesh_lib.make_mesh(devices)
    self.export = export_lib.load_export(config.export) if config.export else None
    if self.export is not None:
      embed.check_export(self.export)
    self.preprocessing = load_lib.preprocessing_of(config, self.export)
    labels = [l.strip() for l in str(config.labels).split(",") if l.strip()]
    if source is None and not config.data:
      raise ConfigError("config.data is empty: give a data spec (--config.data=image:DIR for "
                        "input=image; python -m ecgjax.images render writes such a folder)")
    base = source if source is not None else data_lib.open_source(config.data)
    t0 = time.perf_counter()
    self.data = ft_data.PreparedInMemory(base, self.preprocessing, labels)
    logging.info("prepared %d records of %r in %.1fs (labels %s)", len(self.data), base,
                 time.perf_counter() - t0, ", ".join(self.data.label_names))
    self.label_names = self.data.label_names
    if external is None and config.external:
      external = data_lib.open_source(config.external)
    self.external = None if external is None else ft_data.PreparedInMemory(
        external, self.preprocessing, self.label_names)
    self.n_crops = config.eval_crops or (
        embed.default_n_crops(self.export, self.data) if self.export is not None else 1)
    self.eval_batch = evaluate.eval_batch_size(config.eval_batch_size, self.mesh)
    meta = self.data.metadata()
    self.splits = splits_lib.make_splits(
        meta, self.data.good(), split=config.split, n_folds=config.cv_folds,
        val_fraction=config.val_fraction, seed=config.split_seed,
        test_folds=data_lib.parse_folds(config.test_folds) if config.test_folds else (),
        val_folds=data_lib.parse_folds(config.val_folds) if config.val_folds else ())
    # One epoch length for every split (the largest training side's): the splits then run
    # identical programs, which a persistent compilation cache compiles once.
    self.steps_per_epoch = max(1, math.ceil(max(len(s.train) for s in self.splits)
                                            / config.batch_size))

  def backbone(self) -> model_lib.Backbone:
    """A fresh backbone (pretrained weights from the export, if any)."""
    return load_lib.backbone_of(self.config, self.export, len(self.label_names))

  def rows_per_step(self) -> int:
    """Rows the devices see per step: records, doubled by paired augmented copies."""
    return self.config.batch_size * (2 if self.paired else 1)

  @property
  def paired(self) -> bool:
    """Whether batches hold each record with its augmented copy."""
    return bool(self.config.paired) and self.config.augment != "none"


def _example(run: Run) -> dict[str, np.ndarray]:
  return data_lib.batch.train_example(run.preprocessing, len(run.label_names),
                                      n=2 if run.paired else 1)


def _split_config(config: ml_collections.ConfigDict, steps_per_epoch: int
                  ) -> ml_collections.ConfigDict:
  """The config with the run's total and warmup steps filled in."""
  cfg = ml_collections.ConfigDict(config.to_dict())
  cfg.total_steps = config.epochs * steps_per_epoch
  cfg.warmup_steps = int(round(config.warmup_fraction * cfg.total_steps))
  return cfg


def _model_state(state: dict[str, Any]) -> dict[str, Any]:
  # What prediction needs: the best state is kept without the optimizer's moments
  # (train.hooks.KeepBest saves this much).
  return {"params": state["params"], "collections": state["collections"]}


def train_split(run: Run, split: splits_lib.Split, *,
                stop_after_steps: int | None = None) -> dict[str, Any] | None:
  """Trains one split (or resumes it); returns its test/external predictions and history."""
  config, mesh = run.config, run.mesh
  sdir = os.path.join(run.workdir, split.name)
  os.makedirs(sdir, exist_ok=True)
  test_path, ext_path = os.path.join(sdir, TEST_FILE), os.path.join(sdir, EXTERNAL_FILE)
  val_path = os.path.join(sdir, "validation.jsonl")
  val_pred_path = os.path.join(sdir, VALIDATION_FILE)
  if os.path.exists(test_path) and (run.external is None or os.path.exists(ext_path)):
    logging.info("%s already finished: reading %s", split.name, test_path)
    history = _read_jsonl(val_path)
    return {"test": pred_lib.read_csv(test_path),
            "validation": (pred_lib.read_csv(val_pred_path) if os.path.exists(val_pred_path)
                           else None),
            "external": pred_lib.read_csv(ext_path) if run.external is not None else None,
            "history": history,
            "best_epoch": max(history, key=lambda h: h["score"])["epoch"] if history else None}

  meta = run.data.metadata()
  pos_weight = None
  if config.task == "multilabel":
    pos_weight = ft_data.pos_weight(meta["labels"][split.train], config.pos_weight)
  objective = objective_lib.build_from_config(config, run.backbone(), run.label_names,
                                              pos_weight)
  steps_per_epoch = run.steps_per_epoch
  cfg = _split_config(config, steps_per_epoch)
  # Every split starts from the same initial weights (config.seed); data order and
  # augmentation differ per split.
  seed = protocols.derive_seed(config.seed, split.index)
  augment = make_augment(config, getattr(run.preprocessing, "fs", 0.0))
  scheduled = isinstance(augment, augment_lib.ScheduledAugment)
  # alpha(e) runs over the passes the data stream makes in the whole run (an epoch of
  # steps_per_epoch batches may hold a few more records than this split's training side).
  stream_epochs = cfg.total_steps * config.batch_size / len(split.train)
  n_proc, proc = jax.process_count(), jax.process_index()
  data_iter = data_lib.train_iterator(
      data_lib.SubsetSource(run.data, split.train), run.preprocessing,
      global_batch_size=config.batch_size, seed=seed, process_index=proc,
      process_count=n_proc, worker_count=config.data_workers,
      max_bad_fraction=config.max_bad_fraction, augment=augment,
      augment_epochs=stream_epochs if scheduled else 0.0, paired=run.paired,
      check_bad=False)  # checked on logging steps on the counts of every process
  training = step_lib.build_training(cfg, objective, mesh, _example(run))
  predict_fn = evaluate.make_predict_fn(objective, mesh, training.shardings)
  total, trainable = training.params
  logging.info("%s: train %d / val %d / test %d records; %d epochs x %d steps; %s params "
               "(%s trainable)", split.name, len(split.train), len(split.val),
               len(split.test), config.epochs, steps_per_epoch, f"{total:,}",
               f"{trainable:,}")

  checkpointer = ckpt_lib.Checkpointer(os.path.join(sdir, "checkpoints"),
                                       keep=config.keep_checkpoints)
  best_ckpt = ckpt_lib.Checkpointer(os.path.join(sdir, "best"), keep=1, with_data=False,
                                    async_save=False)
  abstract = ckpt_lib.abstract_like(training.abstract_state, training.shardings)
  start = checkpointer.latest_step() or 0
  if start:
    logging.info("%s: resuming from checkpoint %d", split.name, start)
    state = checkpointer.restore(start, abstract, data_iter)
  else:
    state = training.init()
  history = [h for h in _read_jsonl(val_path) if h["step"] <= start]
  if jax.process_index() == 0:  # lines past the checkpoint belong to a lost epoch
    with open(val_path, "w") as f:
      f.writelines(json.dumps(h) + "\n" for h in history)
  stale = best_ckpt.latest_step()
  if stale is not None and stale > start:
    best_ckpt.manager.delete(stale)

  context = hooks_lib.EvalContext(
      mesh=mesh, objective=objective, shardings=training.shardings,
      preprocessing=run.preprocessing, workdir=sdir, seed=seed,
      extra={"source": run.data, "indices": split.val, "label_names": run.label_names,
             "n_crops": run.n_crops, "batch_size": run.eval_batch, "predict_fn": predict_fn})
  validation = hooks_lib.make_evaluator(
      "validation", {"type": "validation", "task": config.task}, context)

  def describe(step: int) -> dict[str, Any]:
    epoch = math.ceil(step / steps_per_epoch)
    return {"epoch": epoch,
            "alpha": augment_lib.alpha((epoch - 1) * steps_per_epoch * config.batch_size
                                       // len(split.train), stream_epochs)}

  keep_best = hooks_lib.KeepBest(
      validation, best_ckpt, every_steps=steps_per_epoch, history_path=val_path,
      history=history, describe=describe, name=split.name,
      log_name=("validation macro AUROC" if config.task != "regression"
                else "validation -MSE"))
  loop = loop_lib.Loop(
      name=split.name, workdir=sdir, mesh=mesh, training=training, data_iter=data_iter,
      data_name=f"{split.name} of {config.data}", checkpointer=checkpointer,
      total_steps=cfg.total_steps, log_every_steps=config.log_every_steps,
      checkpoint_every_steps=steps_per_epoch, max_bad_fraction=config.max_bad_fraction,
      rows_per_step=run.rows_per_step(), hooks=[keep_best],
      log_extras=lambda step: {"epoch": step / steps_per_epoch})
  t0 = time.perf_counter()
  try:
    result = loop_lib.run(loop, state, start, stop_after=stop_after_steps)
  except loop_lib.Preempted:
    best_ckpt.close()
    raise
  finally:
    checkpointer.close()
  if not result.finished:  # stopped early (tests of resumption)
    best_ckpt.close()
    return None
  best = keep_best.best

  state = best_ckpt.restore(best["step"], _model_state(abstract), None)
  best_ckpt.close()
  write_export(os.path.join(sdir, "export"), objective, state, run, split,
               step=int(best["step"]))
  result = {"history": _read_jsonl(val_path), "best_epoch": best["epoch"]}
  d = evaluate.predict(predict_fn, state, run.data, run.preprocessing, split.test, mesh=mesh,
                       batch_size=run.eval_batch, n_crops=run.n_crops)
  result["test"] = evaluate.to_predictions(d, run.label_names, split.index, run.config.task)
  # The selected model's validation predictions: operating thresholds are chosen on them.
  d = evaluate.predict(predict_fn, state, run.data, run.preprocessing, split.val, mesh=mesh,
                       batch_size=run.eval_batch, n_crops=run.n_crops)
  result["validation"] = evaluate.to_predictions(d, run.label_names, split.index,
                                                 run.config.task)
  result["external"] = None
  if run.external is not None:
    d = evaluate.predict(predict_fn, state, run.external, run.preprocessing,
                         run.external.good(), mesh=mesh, batch_size=run.eval_batch,
                         n_crops=run.n_crops)
    result["external"] = evaluate.to_predictions(d, run.label_names, split.index,
                                                 run.config.task)
  if jax.process_index() == 0:
    if result["external"] is not None:
      pred_lib.write_csv(ext_path, result["external"])
    pred_lib.write_csv(val_pred_path, result["validation"])
    pred_lib.write_csv(test_path, result["test"])  # last: its presence marks the split done
    # The best state stays (best/) for ensembling; the rolling checkpoints are spent.
    shutil.rmtree(os.path.join(sdir, "checkpoints"), ignore_errors=True)
  logging.info("%s done in %.0fs: best epoch %d (validation %.4f)", split.name,
               time.perf_counter() - t0, best["epoch"], best["score"])
  return result


def write_export(path: str, objective: Any, state: dict[str, Any], run: Run,
                 split: splits_lib.Split, step: int) -> None:
  """The split's selected backbone as an export (every process gathers, process 0 writes)."""
  c = run.config
  loop_lib.write_export(path, objective, run.mesh, state, run.preprocessing.to_dict(),
                        {"data": c.data, "split": split.name, "step": step, "seed": c.seed,
                         "objective": "supervised", "labels": list(run.label_names)},
                        # Per-split classifiers: `python -m ecgjax.serve build` when wanted;
                        # lowering one per split costs every fine-tune seconds.
                        serving=False)


def ensemble(parts: list[pred_lib.Predictions]) -> pred_lib.Predictions:
  """Mean probability over the splits' models for each external record (same row order)."""
  first = parts[0]
  for p in parts[1:]:
    if not np.array_equal(p.record_id, first.record_id):
      raise ValueError("external predictions of the splits list different records")
  p = np.mean([q.p for q in parts], axis=0)
  n = len(first.record_id)
  return pred_lib.Predictions(first.record_id, first.patient_id, first.fold,
                              np.zeros(n, np.int64), np.full(n, -1, np.int64), first.y, p,
                              first.label_names, first.task)


def _report(pred: pred_lib.Predictions, config, title: str,
            validation: pred_lib.Predictions | None = None) -> dict[str, Any]:
  r = report_lib.build(pred, n_bootstrap=config.bootstrap, seed=config.seed,
                       threshold_from=validation,
                       meta={"title": title, "protocol": "predictions"})
  print(report_lib.text_table(r, title=title), flush=True)
  return report_lib.summary(r)


def finetune(config: ml_collections.ConfigDict, workdir: str, *, source=None, external=None,
             devices=None, stop_after_steps: int | None = None) -> dict[str, Any] | None:
  """Runs (or resumes) the fine-tuning `config` in `workdir`; returns the results summary.

  `source` / `external` (Source objects) replace `config.data` / `config.external`.
  """
  os.makedirs(workdir, exist_ok=True)
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  t0 = time.perf_counter()
  run = Run(config, workdir, source=source, devices=devices, external=external)
  rows = run.rows_per_step()
  if config.batch_size % jax.process_count() or rows % run.mesh.devices.size:
    raise ValueError(f"config.batch_size={config.batch_size} ({rows} rows per step) must "
                     f"split evenly over {jax.process_count()} processes and "
                     f"{run.mesh.devices.size} devices")
  results = []
  for split in run.splits:
    r = train_split(run, split, stop_after_steps=stop_after_steps)
    if r is None:  # stopped early (tests of resumption)
      return None
    results.append(r)
  oof = pred_lib.concat([r["test"] for r in results])
  out: dict[str, Any] = {"workdir": workdir, "n_splits": len(results),
                         "best_epochs": [r.get("best_epoch") for r in results]}
  vals = [r["validation"] for r in results if r.get("validation") is not None]
  val = pred_lib.concat(vals) if len(vals) == len(results) else None
  if jax.process_index() == 0:
    pred_lib.write_csv(os.path.join(workdir, "predictions.csv"), oof)
    if val is not None:
      pred_lib.write_csv(os.path.join(workdir, VALIDATION_FILE), val)
  out["test"] = _report(oof, config, f"{workdir}: test predictions of {len(results)} "
                                     f"split(s), {len(oof.record_id)} records", val)
  if config.task != "regression":
    out["macro_auroc"] = out["test"]["macro_auroc"]
    out["macro_auroc_ci"] = out["test"]["macro_auroc_ci"]
  if run.external is not None:
    ext = ensemble([r["external"] for r in results])
    if jax.process_index() == 0:
      pred_lib.write_csv(os.path.join(workdir, EXTERNAL_FILE), ext)
    out["external"] = _report(ext, config, f"external set, ensemble of {len(results)} "
                                           "split model(s)", val)
  out["wall_s"] = time.perf_counter() - t0
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "results.json"), "w") as f:
      json.dump(report_lib.json_safe(out), f, indent=2)
  if "macro_auroc" in out:
    lo, hi = out["macro_auroc_ci"]
    print(f"macro AUROC {out['macro_auroc']:.3f} [95% CI {lo:.3f}-{hi:.3f}] over "
          f"{len(oof.record_id)} test records ({len(results)} split(s))", flush=True)
  return out
