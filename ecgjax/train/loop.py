"""THE training loop: pretraining and every fine-tuning split run through `run`.

`run(loop, state, start)` trains from step `start` to `loop.total_steps` with the one jitted,
donating step, and does what every run needs the same way: device prefetch, logging (host
metrics only on logging steps), the finiteness check, the bad-record limit on the counts of
every process, checkpoints of state + data position, and preemption (a SIGTERM seen by any
process stops every process at the same saved step: `Preempted`). What differs between runs
is hooks (`ecgjax.train.hooks`): evaluators, pictures, keep-best, the export.

`train(config, workdir)` is pretraining on top of it: data, objective, state or resume,
`config.evals` evaluators, the reconstruction picture and the export at the end.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
import dataclasses
import json
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh

from ecgjax import data as data_lib
from ecgjax import export as export_lib
from ecgjax import serve as serve_lib
from ecgjax import objectives as objectives_lib
from ecgjax.errors import ConfigError
from ecgjax.train import checkpoint as ckpt_lib
from ecgjax.train import hooks as hooks_lib
from ecgjax.train import host_memory
from ecgjax.train import mesh as mesh_lib
from ecgjax.train import metrics as metrics_lib
from ecgjax.train import preemption as preemption_lib
from ecgjax.train import step as step_lib
from ecgjax.train.step import NonFiniteLossError, check_finite  # noqa: F401  (public here)


class Preempted(RuntimeError):
  """A SIGTERM stopped the run after every process saved the same step."""

  def __init__(self, name: str, step: int, record: dict[str, Any]):
    super().__init__(f"{name}: saved step {step} after SIGTERM")
    self.step, self.record = step, record


class RecompilationError(RuntimeError):
  """The production train step compiled again mid-run (a shape, dtype or sharding changed)."""


class DevicePrefetch:
  """Host batches -> global device arrays, `depth` batches ahead of the step using them.

  The transfer of the next batch overlaps the running step. A checkpoint must record the
  position after the batches the steps CONSUMED, not after the ones fetched ahead, so this
  object stands in for the data iterator when saving (`get_state`).
  """

  def __init__(self, it: Any, mesh: Mesh, *, depth: int = 1, limit: int | None = None):
    self._it, self._mesh, self._depth = it, mesh, max(int(depth), 0)
    self._left = limit  # batches still to fetch (None: unbounded)
    self._queue: collections.deque = collections.deque()
    self._state = it.get_state()

  def _fetch(self) -> None:
    if self._left is not None and self._left <= 0:
      return
    host = next(self._it)
    self._queue.append((mesh_lib.to_global(host, self._mesh), self._it.get_state()))
    if self._left is not None:
      self._left -= 1

  def __iter__(self) -> DevicePrefetch:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    if not self._queue:
      self._fetch()
    if not self._queue:
      raise StopIteration
    batch, self._state = self._queue.popleft()
    while len(self._queue) < self._depth and (self._left is None or self._left > 0):
      self._fetch()
    return batch

  def get_state(self) -> bytes:
    """The data position after the last batch handed out (grain's checkpoint format)."""
    return json.dumps(self._state, indent=4).encode()


@dataclasses.dataclass
class Loop:
  """One run of the loop: the compiled training, its data, where it logs and saves."""
  name: str  # names the run in messages: "pretraining", "split0"
  workdir: str  # metrics.jsonl and tensorboard/ go here
  mesh: Mesh
  training: step_lib.Training
  data_iter: Any  # the grain iterator (its position is checkpointed)
  data_name: str  # the data spec, for the bad-record messages
  checkpointer: ckpt_lib.Checkpointer
  total_steps: int
  log_every_steps: int
  checkpoint_every_steps: int
  max_bad_fraction: float
  rows_per_step: int  # examples the devices see per step (throughput)
  hooks: Sequence[hooks_lib.Hook] = ()
  log_extras: Callable[[int], dict[str, Any]] | None = None  # more columns of a log row
  prefetch: int = 1  # batches put on the devices ahead of the running step


@dataclasses.dataclass
class Result:
  """Where `run` ended: the state, its step, the last log row, and whether it finished."""
  state: dict[str, Any]
  step: int
  record: dict[str, Any]
  finished: bool


def run(loop: Loop, state: dict[str, Any], start: int, *,
        stop_after: int | None = None) -> Result:
  """Trains `state` from step `start` to `loop.total_steps` (see the module docstring).

  `stop_after` ends the run after that many steps of this call, without the final save or
  the hooks' `end`, as a kill would (tests of resumption use it). Raises `Preempted` after
  every process saved the step a SIGTERM stopped them at.
  """
  training, total = loop.training, loop.total_steps
  writer = metrics_lib.MetricWriter(loop.workdir, total, loop.rows_per_step)
  preemption = preemption_lib.Preemption()
  batches = DevicePrefetch(loop.data_iter, loop.mesh, depth=loop.prefetch,
                           limit=max(total - start, 0))
  record: dict[str, Any] = {}
  step, traces = start, None
  # One compiled program for the logged learning rate: called eagerly, the schedule's dozen
  # jnp ops would each compile on the first logging step.
  lr_at = jax.jit(training.schedule)
  t_compile = time.perf_counter()
  try:
    first = None
    if step < total:
      first = next(batches)
      # Compiled ahead of the first step so that the compiler's freed memory goes back to
      # the OS before the step maps its buffers: the whole-process peak then holds one of
      # the two, not both (host_memory). The call below reuses this executable.
      if hasattr(training.train_step, "lower"):
        training.train_step.lower(state, first).compile()
      host_memory.release_free_memory()
    while step < total:
      batch, first = (first, None) if first is not None else (next(batches), None)
      state, metrics = training.train_step(state, batch)
      step += 1
      if step == start + 1:
        jax.block_until_ready(metrics)
        logging.info("%s: first step (compilation included) took %.1fs", loop.name,
                     time.perf_counter() - t_compile)
        writer.start(step)
        traces = training.trace_count()
      if step % loop.log_every_steps == 0 or step == total:
        host = jax.device_get(metrics)
        check_finite(state, f"{loop.name}, logged at step {step}")
        try:
          counts = preemption_lib.check_bad_records(loop.data_iter, loop.max_bad_fraction,
                                                    loop.data_name)
        except data_lib.TooManyBadRecordsError:
          # Every process stops here together; the state is good, so keep it.
          loop.checkpointer.save(step, state, batches)
          loop.checkpointer.wait()
          raise
        extras = loop.log_extras(step) if loop.log_extras else {}
        record = writer.write(step, {**host, "lr": float(lr_at(step - 1)),
                                     **extras, **counts})
      for hook in loop.hooks:
        if hook.due(step, total):
          out = hook(step, state)
          if out:
            writer.write_eval(step, out)
      # Every process asks every step, so all agree on the step a SIGTERM anywhere stops at.
      preempted = preemption.reached(step)
      if step % loop.checkpoint_every_steps == 0 or step == total or preempted:
        check_finite(state, f"{loop.name}, before saving step {step}")
        loop.checkpointer.save(step, state, batches)
      if preempted:
        loop.checkpointer.wait()
        logging.warning("SIGTERM: saved step %d (%s), stopping; rerun the same command to "
                        "resume", step, loop.name)
        raise Preempted(loop.name, step, record)
      if stop_after is not None and step - start >= stop_after:
        loop.checkpointer.wait()
        return Result(state, step, record, finished=False)
    loop.checkpointer.wait()
    if traces is not None and training.trace_count() != traces:
      raise RecompilationError(
          f"{loop.name}: the train step was traced {training.trace_count() - traces} more "
          "time(s) after its first step: something changed a shape, dtype or sharding of "
          "the state or the batch mid-run, and every such step paid a compilation")
    for hook in loop.hooks:
      hook.end(step, state)
    return Result(state, step, record, finished=True)
  finally:
    preemption.restore()
    writer.close()
    for hook in loop.hooks:
      hook.close()


# -- pretraining -------------------------------------------------------------------------


def augmenter_from_config(config: ml_collections.ConfigDict):
  """`config.augment` -> a picklable `(x, rng) -> x` run in the grain workers, or None."""
  from ecgjax.data import augment  # pylint: disable=g-import-not-at-top
  return augment.build(config.augment, config.input.fs)


def preprocessing_from_config(config: ml_collections.ConfigDict) -> data_lib.Preprocessing:
  """The input contract declared in `config.input`."""
  try:
    return data_lib.Preprocessing.from_dict(config.input.to_dict())
  except ValueError as e:
    raise ConfigError(f"config.input: {e}") from None


def write_export(directory: str, objective: Any, mesh: Mesh, state: dict[str, Any],
                 contract: dict[str, Any], training: dict[str, Any], *,
                 serving: bool = True) -> None:
  """The objective's encoder of `state` as an export: every process gathers the (possibly
  sharded) variables, process 0 writes. An objective whose encoder sees less than the training
  window (views cropped on device) says what it takes in its description's "input", which
  overrides the contract there."""
  params, collections = jax.jit(lambda p, c: (p, c), out_shardings=mesh_lib.replicated(mesh))(
      state["params"], state["collections"])
  variables, desc = objective.export_encoder(params, collections)
  desc = dict(desc)
  contract = {**contract, **desc.pop("input", {})}
  if hooks_lib.process0():
    export_lib.save_export(directory, variables["params"], desc, contract,
                           collections={k: v for k, v in variables.items() if k != "params"},
                           training=training)
    # The embedding function as StableHLO beside it (`ecgjax.serve.load`: jax alone runs it).
    # A model jax.export cannot serialize still has its export: the failure is a warning.
    try:
      if serving:
        serve_lib.write_serving(directory)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("export %s: no serving function (%s: %s); the export is complete",
                      directory, type(e).__name__, e)
    logging.info("exported encoder to %s", directory)


class ExportHook(hooks_lib.Hook):
  """Writes WORKDIR/export (the encoder and its input contract) when training finishes."""

  every_steps, at_last_step = 0, False

  def __init__(self, config: ml_collections.ConfigDict, objective: Any, mesh: Mesh,
               preprocessing: data_lib.Preprocessing, workdir: str):
    self.config, self.objective, self.mesh = config, objective, mesh
    self.preprocessing, self.workdir = preprocessing, workdir

  def end(self, step: int, state: dict[str, Any]) -> None:
    c = self.config
    write_export(os.path.join(self.workdir, "export"), self.objective, self.mesh, state,
                 self.preprocessing.to_dict(),
                 {"data": c.data, "steps": step, "batch_size": c.batch_size, "seed": c.seed,
                  "objective": c.objective})


def pretraining_evals(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config.evals`, plus the reconstruction picture every `config.vis_every_steps`."""
  evals = {k: v for k, v in (config.get("evals") or {}).items()}
  if config.get("vis_every_steps") and "reconstruction" not in evals:
    evals["reconstruction"] = {"type": "reconstruction", "every_steps": config.vis_every_steps}
  return evals


def train(config: ml_collections.ConfigDict, workdir: str, *,
          devices: list[jax.Device] | None = None, stop_after: int | None = None,
          hooks: Sequence[hooks_lib.Hook] = ()) -> dict[str, Any]:
  """Pretrains (or resumes) `config` in `workdir`; returns the last logged metrics.

  `stop_after` ends the loop after that many steps of this call without the final
  save/export, as a kill would (tests use it to check resumption); `hooks` run after the
  configured ones.
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = mesh_lib.make_mesh(devices)
  n_proc, proc = jax.process_count(), jax.process_index()
  if config.batch_size % mesh.devices.size:
    raise ConfigError(f"config.batch_size={config.batch_size} must be divisible by the "
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
      check_bad=False)  # checked by the loop on the counts of every process
  objective = objectives_lib.build(config)
  example = data_lib.train_example(preprocessing, len(source.label_names), n=1)
  training = step_lib.build_training(config, objective, mesh, example)
  total, trainable = training.params
  logging.info("model %s %s: %s params (%s trainable) on %d devices (%d processes)",
               config.model, config.variant, f"{total:,}", f"{trainable:,}",
               mesh.devices.size, n_proc)
  context = hooks_lib.EvalContext(mesh=mesh, objective=objective, shardings=training.shardings,
                                  preprocessing=preprocessing, workdir=workdir,
                                  seed=config.seed, extra={"train_source": source})
  all_hooks = list(hooks_lib.build_evaluators(pretraining_evals(config), context))
  if config.export_at_end:
    all_hooks.append(ExportHook(config, objective, mesh, preprocessing, workdir))
  all_hooks.extend(hooks)

  checkpointer = ckpt_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                       keep=config.keep_checkpoints)
  try:
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
          start, ckpt_lib.abstract_like(training.abstract_state, training.shardings),
          data_iter)
    host_memory.release_free_memory()  # what initialising or restoring left in the heap
    loop = Loop(name="pretraining", workdir=workdir, mesh=mesh, training=training,
                data_iter=data_iter, data_name=config.data, checkpointer=checkpointer,
                total_steps=config.total_steps, log_every_steps=config.log_every_steps,
                checkpoint_every_steps=config.checkpoint_every_steps,
                max_bad_fraction=config.max_bad_fraction, rows_per_step=config.batch_size,
                hooks=all_hooks)
    try:
      return run(loop, state, start, stop_after=stop_after).record
    except Preempted as e:
      return e.record  # a clean stop: every process saved the same step
  finally:
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
