"""The training loop shared by every objective: data -> jitted step -> log/checkpoint/export."""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging

from ecgjax import data as data_lib
from ecgjax import objectives as objectives_lib
from ecgjax.train import checkpoint as ckpt_lib
from ecgjax.train import export as export_lib
from ecgjax.train import mesh as mesh_lib
from ecgjax.train import metrics as metrics_lib
from ecgjax.train import preemption as preemption_lib
from ecgjax.train import step as step_lib


class NonFiniteLossError(RuntimeError):
  """Training produced a NaN/inf loss or gradient; the last good checkpoint is kept."""


def augmenter_from_config(config: ml_collections.ConfigDict):
  """`config.augment` -> a picklable `(x, rng) -> x` run in the grain workers, or None."""
  from ecgjax.data import augment  # pylint: disable=g-import-not-at-top
  name = config.augment
  if name == "none":
    return None
  if name == "st_mem_randaugment":
    return augment.StMemRandAugment(fs=config.input.fs)
  raise ValueError(f"config.augment={name!r} is unknown; known: none, st_mem_randaugment")


def preprocessing_from_config(config: ml_collections.ConfigDict) -> data_lib.Preprocessing:
  """The input contract declared in `config.input`."""
  return data_lib.Preprocessing.from_dict(config.input.to_dict())


def _example_batch(source, preprocessing, n: int) -> dict[str, np.ndarray]:
  # Shapes come from the contract, not from a record: record 0 may be a bad one.
  leads = len(preprocessing.leads)
  return {"signal": np.zeros((n, leads, preprocessing.samples), np.float32),
          "lead_mask": np.ones((n, leads), np.float32),
          "labels": np.zeros((n, len(source.label_names)), np.float32),
          "index": np.zeros((n,), np.int32),
          "patient": np.zeros((n,), np.int32)}


def check_finite(state: dict[str, Any], where: str) -> None:
  """Raises NonFiniteLossError if the state recorded a non-finite loss or gradient step."""
  bad = int(jax.device_get(state["first_bad_step"]))
  if bad >= 0:
    raise NonFiniteLossError(
        f"non-finite loss or gradient at step {bad} ({where}); its update was dropped and "
        "nothing after it was saved, so the newest checkpoint is the last good state. "
        "Lower config.base_lr, set config.grad_clip_norm, or check the data.")


def train(config: ml_collections.ConfigDict, workdir: str, *,
          devices: list[jax.Device] | None = None,
          stop_after: int | None = None) -> dict[str, Any]:
  """Trains (or resumes) `config` in `workdir`; returns the last logged metrics.

  `stop_after` ends the loop after that many steps of this call without the final
  save/export, as a kill would (tests use it to check resumption).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = mesh_lib.make_mesh(devices)
  n_proc, proc = jax.process_count(), jax.process_index()
  if config.batch_size % mesh.devices.size:
    raise ValueError(f"config.batch_size={config.batch_size} must be divisible by the "
                     f"{mesh.devices.size} devices of the mesh")
  if proc == 0:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))

  source = data_lib.open_source(config.data)
  preprocessing = preprocessing_from_config(config)
  data_iter = data_lib.train_iterator(
      source, preprocessing, global_batch_size=config.batch_size, seed=config.seed,
      process_index=proc, process_count=n_proc, worker_count=config.data_workers,
      max_bad_fraction=config.max_bad_fraction, augment=augmenter_from_config(config),
      check_bad=False)  # checked below on the counts of every process
  objective = objectives_lib.build(config)
  example = _example_batch(source, preprocessing, n=1)

  training = step_lib.build_training(config, objective, mesh, example)
  schedule, train_step = training.schedule, training.train_step
  total, trainable = training.params
  logging.info("model %s %s: %s params (%s trainable) on %d devices (%d processes)",
               config.model, config.variant, f"{total:,}", f"{trainable:,}",
               mesh.devices.size, n_proc)

  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=config.keep_checkpoints)
  start = checkpointer.latest_step()
  if start is None:
    state = training.init()
    if config.get("init_from"):
      state = _init_from(config, training, state, workdir)
    start = 0
  else:
    if config.get("init_from"):
      logging.info("resuming: config.init_from=%s is not read again", config.init_from)
    logging.info("resuming from checkpoint %d in %s", start, checkpointer.directory)
    state = checkpointer.restore(
        start, ckpt_lib.abstract_like(training.abstract_state, training.shardings), data_iter)

  writer = metrics_lib.MetricWriter(workdir, config.total_steps, config.batch_size)
  preemption = preemption_lib.Preemption()
  vis_batch = None
  record: dict[str, Any] = {}
  step = start
  t_compile = time.perf_counter()
  try:
    while step < config.total_steps:
      batch = mesh_lib.to_global(next(data_iter), mesh)
      state, metrics = train_step(state, batch)
      step += 1
      if step == start + 1:
        jax.block_until_ready(metrics)
        logging.info("first step (compilation included) took %.1fs",
                     time.perf_counter() - t_compile)
        writer.start(step)
      if step % config.log_every_steps == 0 or step == config.total_steps:
        host = jax.device_get(metrics)
        check_finite(state, f"logged at step {step}")
        try:
          counts = preemption_lib.check_bad_records(data_iter, config.max_bad_fraction,
                                                    config.data)
        except data_lib.TooManyBadRecordsError:
          # Every process stops here together; the state is good, so keep it.
          checkpointer.save(step, state, data_iter)
          checkpointer.wait()
          raise
        record = writer.write(step, {**host, "lr": float(schedule(step - 1)), **counts})
      if config.vis_every_steps and (step % config.vis_every_steps == 0
                                     or step == config.total_steps):
        if vis_batch is None:
          vis_batch = _example_records(source, preprocessing, 2)
        path = os.path.join(workdir, "plots", f"reconstruction_{step:07d}.png")
        objective.visualize(state["params"], state["collections"], vis_batch,
                            jax.random.PRNGKey(config.seed), path)
      # Every process asks every step, so all agree on the step a SIGTERM anywhere stops at.
      preempted = preemption.reached(step)
      stopping = preempted or (stop_after is not None and step - start >= stop_after)
      if (step % config.checkpoint_every_steps == 0 or step == config.total_steps
          or preempted):
        check_finite(state, f"before saving step {step}")
        checkpointer.save(step, state, data_iter)
      if stopping:
        if preempted:
          logging.warning("SIGTERM: saved step %d, stopping", step)
        checkpointer.wait()
        return record
    if config.export_at_end:
      export_dir = os.path.join(workdir, "export")
      params = jax.jit(lambda p: p, out_shardings=mesh_lib.replicated(mesh))(state["params"])
      enc_params, enc_desc = objective.export_encoder(params, state["collections"])
      # An objective whose encoder sees less than the training window (views cropped on
      # device) says what it takes; the export's contract must match the encoder.
      contract = {**preprocessing.to_dict(), **enc_desc.pop("input", {})}
      if proc == 0:
        export_lib.save_export(
            export_dir, enc_params, enc_desc, contract,
            training={"data": config.data, "steps": step, "batch_size": config.batch_size,
                      "seed": config.seed, "objective": config.objective})
        logging.info("exported encoder to %s", export_dir)
    return record
  finally:
    preemption.restore()
    writer.close()
    checkpointer.close()


def _init_from(config: ml_collections.ConfigDict, training: Any, state: dict[str, Any],
               workdir: str) -> dict[str, Any]:
  """The fresh state with the whole pretraining model of config.init_from (every key
  accounted for; the report goes to WORKDIR/init_from_report.json)."""
  from ecgjax.interop import pretraining  # pylint: disable=g-import-not-at-top
  params, report = pretraining.load(config.init_from, config.get("init_from_format", ""),
                                    training.abstract_state["params"], config.objective)
  if jax.process_index() == 0:
    pretraining.save_report(report, workdir)
  logging.info("config.init_from: %s", report.summary())
  # Every process read the same file: each builds its own shards of each global array.
  params = jax.tree.map(
      lambda v, t, sh: jax.make_array_from_callback(
          t.shape, sh, lambda idx, a=np.asarray(v, t.dtype): a[idx]),
      params, training.abstract_state["params"], training.shardings["params"])
  return training.with_params(state, params)


def _example_records(source, preprocessing, n: int) -> dict[str, np.ndarray]:
  # eval_batches knows prepared records (already filtered) and skips bad ones.
  batch = next(iter(data_lib.eval_batches(source, preprocessing, batch_size=n)))
  return {"signal": batch["signal"][batch["valid"], 0]}
