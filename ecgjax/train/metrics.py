"""Metrics to `DIR/metrics.jsonl`, TensorBoard event files in `DIR/tensorboard/`, and a one-line
progress report on the console."""

from __future__ import annotations

import json
import logging as logging_std
import os
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from absl import logging


def _plain(v: Any) -> Any:
  v = np.asarray(v)
  return v.item() if v.ndim == 0 else v.tolist()


TENSORBOARD_DIR = "tensorboard"


class MetricWriter:
  """Appends one JSON object per logged step and the same scalars to TensorBoard event files
  (`tensorboard --logdir WORKDIR`); only process 0 writes."""

  def __init__(self, workdir: str, total_steps: int, global_batch: int):
    self.path = os.path.join(workdir, "metrics.jsonl")
    self.tb_dir = os.path.join(workdir, TENSORBOARD_DIR)
    self.total_steps = total_steps
    self.global_batch = global_batch
    self.active = jax.process_index() == 0
    self._t = None
    self._step = None
    self._tb = None

  def _tensorboard(self):
    # tensorboardX: a light event-file writer without TensorFlow. Opened on the first write,
    # so a writer that never logs leaves no empty event file behind.
    if self._tb is None:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(self.tb_dir, flush_secs=30)
    return self._tb

  def close(self) -> None:
    """Flushes and closes the event file (safe to call more than once)."""
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def start(self, step: int) -> None:
    """Marks the wall-clock origin for throughput (after compilation)."""
    self._t, self._step = time.perf_counter(), step

  def write(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """Logs host-side metrics for `step`, adding throughput and ETA; returns the record."""
    record = {"step": int(step)}
    record.update({k: _plain(v) for k, v in metrics.items()})
    now = time.perf_counter()
    if self._t is not None and step > self._step:
      sec_per_step = (now - self._t) / (step - self._step)
      record["samples_per_s"] = self.global_batch / sec_per_step
      record["eta_s"] = sec_per_step * max(self.total_steps - step, 0)
    self._t, self._step = now, step
    if self.active:
      with open(self.path, "a") as f:
        f.write(json.dumps(record) + "\n")
      tb = self._tensorboard()
      for key, value in record.items():
        if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
          tb.add_scalar(key, value, int(step))
      tb.flush()
      logging.info("%s", progress_line(record, self.total_steps))
    return record


  def write_eval(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """Logs an evaluation's results for `step` (a row of its own: no throughput, no loss)."""
    record = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
    if self.active:
      with open(self.path, "a") as f:
        f.write(json.dumps(finite_or_null(record)) + "\n")
      tb = self._tensorboard()
      for key, value in record.items():
        if (key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)
            and np.isfinite(value)):
          tb.add_scalar(key, value, int(step))
      tb.flush()
    return record


def finite_or_null(record: Mapping[str, Any]) -> dict[str, Any]:
  """The record with NaN/inf floats as None: JSON has no NaN (an undefined metric, e.g. a label
  with one class in the test set, is null)."""
  return {k: (None if isinstance(v, float) and not np.isfinite(v) else v)
          for k, v in record.items()}


def progress_line(record: dict[str, Any], total_steps: int) -> str:
  """`step 120/1000 | loss 0.8123 | lr 1.2e-04 | 35.1 samples/s | ETA 4m12s`."""
  parts = [f"step {record['step']}/{total_steps}"]
  if "loss" in record:
    parts.append(f"loss {record['loss']:.4f}")
  if "lr" in record:
    parts.append(f"lr {record['lr']:.2e}")
  if "samples_per_s" in record:
    parts.append(f"{record['samples_per_s']:.1f} samples/s")
  if "eta_s" in record:
    s = int(record["eta_s"])
    parts.append(f"ETA {s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600
                 else f"ETA {s // 60}m{s % 60:02d}s")
  return " | ".join(parts)


class _OwnInfoOnly(logging_std.Filter):
  """Keeps warnings from everyone but INFO/DEBUG only from ecgjax and the entry scripts."""

  def filter(self, record: logging_std.LogRecord) -> bool:
    if record.levelno >= logging_std.WARNING:
      return True
    path = record.pathname.replace("\\", "/")
    return "site-packages" not in path and "/lib/python" not in path


def quiet_library_logs() -> None:
  """Drops INFO chatter from orbax/jax/grain on the console so progress lines stay readable."""
  logging.get_absl_handler().addFilter(_OwnInfoOnly())
