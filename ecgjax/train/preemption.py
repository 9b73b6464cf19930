"""Decisions every process must take together: SIGTERM (preemption) -> every process saves the
SAME step and stops; too many bad records -> every process stops (`check_bad_records`).

One process: a Python SIGTERM handler sets a flag the loop reads once per step. Several
processes (`jax.distributed.initialize`): JAX's preemption service. Its SIGTERM notifier runs in
every process; a notice seen by ANY process is propagated through the coordination service, which
picks one step (the largest step any process has reached, plus one), and `reached(step)` turns
True at exactly that step everywhere. A per-process flag would let one process enter the
collective save while another enters the next training step: the run would hang instead of
saving. No Python handler is installed then, since it would replace the service's own.
"""

from __future__ import annotations

import signal

import jax
import numpy as np
from absl import logging


def _sync_manager_available() -> bool:
  """Whether jax.distributed started the preemption sync manager (jax_enable_preemption_service)."""
  try:
    from jax._src import distributed  # pylint: disable=g-import-not-at-top
  except ImportError:  # a jax without it: fall back to an all-reduced flag
    return False
  state = distributed.global_state
  return state.client is not None and state.preemption_sync_manager is not None


class Preemption:
  """Call `reached(step)` once per step on every process, with the same step ids."""

  def __init__(self):
    self.raised = False  # this process saw SIGTERM (one process, or the fallback)
    self._multi = jax.process_count() > 1
    self._service = self._multi and _sync_manager_available()
    self._old = None
    if not self._service:
      if self._multi:
        logging.warning("JAX's preemption service is off: SIGTERM is agreed on by an "
                        "all-reduce every step, which costs a host round trip per step")
      try:
        self._old = signal.signal(signal.SIGTERM, self._handle)
      except ValueError:  # not the main thread (e.g. inside some test runners)
        self._old = None

  def _handle(self, signum, frame) -> None:
    del signum, frame
    self.raised = True

  def reached(self, step: int) -> bool:
    """True at the step every process saves at and stops after a SIGTERM anywhere."""
    if self._service:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      hit = bool(multihost_utils.reached_preemption_sync_point(int(step)))
    elif self._multi:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      flags = multihost_utils.process_allgather(np.asarray(self.raised, np.int32))
      hit = bool(np.asarray(flags).max())
    else:
      hit = self.raised
    self.raised = self.raised or hit
    return hit

  def restore(self) -> None:
    """Puts back the SIGTERM handler this replaced (one process)."""
    if self._old is not None:
      signal.signal(signal.SIGTERM, self._old)
      self._old = None


def check_bad_records(data_iter, max_bad_fraction: float, name: str) -> dict[str, int]:
  """Global (summed over processes) record counts of the training stream; raises
  data.TooManyBadRecordsError on EVERY process when they exceed `max_bad_fraction`.

  Call it on the same steps in every process (the loops do, on logging steps): one process
  raising while the others enter the next step's collectives would hang the run.
  """
  from ecgjax import data as data_lib  # pylint: disable=g-import-not-at-top
  local = np.asarray([data_iter.records_seen, data_iter.bad_records], np.int64)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    total = np.asarray(multihost_utils.process_allgather(local.astype(np.int32))).reshape(
        -1, 2).sum(0)
  else:
    total = local
  seen, bad = int(total[0]), int(total[1])
  data_lib.check_bad_fraction(seen, bad, max_bad_fraction, list(data_iter.bad_examples),
                              f"{name} (all {jax.process_count()} processes)")
  return {"records_seen": seen, "bad_records": bad}
