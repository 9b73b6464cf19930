"""The one loop's engine details: device prefetch, the recompilation guard, hooks."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from ecgjax.train import checkpoint as ckpt_lib
from ecgjax.train import hooks as hooks_lib
from ecgjax.train import loop, mesh as mesh_lib, step as step_lib
from tests import helpers


class _Counting:
  """A data iterator of numbered batches whose state is the next number (as grain's is)."""

  def __init__(self, samples=10, grow_at=None):
    self.i, self.samples, self.grow_at = 0, samples, grow_at

  def __next__(self):
    t = self.samples + (2 if self.grow_at is not None and self.i >= self.grow_at else 0)
    x = np.full((8, 2, t), float(self.i), np.float32)
    self.i += 1
    return {"signal": x}

  def get_state(self):
    return {"next": self.i}

  def set_state(self, state):
    self.i = state["next"]


def test_prefetch_is_ahead_but_checkpoints_the_consumed_position():
  it = _Counting()
  pf = loop.DevicePrefetch(it, mesh_lib.make_mesh(), depth=2, limit=5)
  first = next(pf)
  assert float(first["signal"][0, 0, 0]) == 0.0
  assert it.i == 3  # batch 0 handed out, 1 and 2 already on the devices
  assert json.loads(pf.get_state()) == {"next": 1}  # a resume starts at batch 1
  rest = [float(b["signal"][0, 0, 0]) for b in pf]
  assert rest == [1.0, 2.0, 3.0, 4.0] and it.i == 5  # never fetches past its limit


class _Recorder(hooks_lib.Hook):
  def __init__(self, every):
    self.every_steps, self.calls, self.ended = every, [], []

  def __call__(self, step, state):
    self.calls.append(step)
    return {"seen": float(step)}

  def end(self, step, state):
    self.ended.append(step)


def _loop(tmp_path, it, hooks=(), total=4):
  obj = helpers.QuadraticObjective()
  c = helpers.tiny_stmem_config(base_lr=0.1, batch_size=8, warmup_steps=0, total_steps=total)
  mesh = mesh_lib.make_mesh()
  example = {"signal": np.zeros((8, 2, 10), np.float32)}
  training = step_lib.build_training(c, obj, mesh, example)
  ckpt = ckpt_lib.Checkpointer(str(tmp_path / "ckpt"), keep=2)
  lp = loop.Loop(name="test", workdir=str(tmp_path), mesh=mesh, training=training,
                 data_iter=it, data_name="numbers", checkpointer=ckpt, total_steps=total,
                 log_every_steps=1, checkpoint_every_steps=2, max_bad_fraction=1.0,
                 rows_per_step=8, hooks=list(hooks))
  return lp, training


def test_hooks_run_at_their_steps_log_rows_and_end(tmp_path, monkeypatch):
  monkeypatch.setattr(loop.preemption_lib, "check_bad_records", lambda *a, **k: {})
  rec = _Recorder(every=3)
  lp, training = _loop(tmp_path, _Counting(), [rec], total=4)
  try:
    result = loop.run(lp, training.init(), 0)
  finally:
    lp.checkpointer.close()
  assert result.finished and result.step == 4
  assert rec.calls == [3, 4] and rec.ended == [4]  # every 3 steps, the last step, the end
  rows = [json.loads(l) for l in open(os.path.join(tmp_path, "metrics.jsonl"))]
  assert [r["step"] for r in rows if "seen" in r] == [3, 4]
  assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
  assert training.trace_count() == 1  # logging, a hook and two checkpoints: one compilation
  assert sorted(os.listdir(tmp_path / "ckpt")) == ["2", "4"]


def test_recompilation_of_the_production_step_is_an_error(tmp_path, monkeypatch):
  monkeypatch.setattr(loop.preemption_lib, "check_bad_records", lambda *a, **k: {})
  lp, training = _loop(tmp_path, _Counting(grow_at=2), total=4)
  try:
    with pytest.raises(loop.RecompilationError, match="traced 1 more time"):
      loop.run(lp, training.init(), 0)
  finally:
    lp.checkpointer.close()
