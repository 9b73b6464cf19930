"""Two real JAX processes (as on two hosts) train exactly as one process with all devices, and
agree on every stop: a SIGTERM seen by one of them, a bad-record limit reached on the global
counts."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import portpicker
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal"]


def _env(n_devices):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(n_devices)}


def _launch_pair(args, workdir, port):
  return [subprocess.Popen(
      [sys.executable, *args, "--workdir", workdir, "--coordinator_address", f"localhost:{port}",
       "--num_processes", "2", "--process_id", str(i)],
      cwd=REPO, env={**_env(4), "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True) for i in range(2)]


def _wait_for_lines(path: str, n: int, timeout: float = 300) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline and not (os.path.exists(path) and
                                        len(open(path).readlines()) >= n):
    time.sleep(0.1)


def _rows(path: str) -> dict[int, float]:
  """step -> loss; a step logged twice (before and after a resume) keeps the later row."""
  return {r["step"]: r["loss"] for r in map(json.loads, open(path))}


@pytest.mark.slow
def test_two_processes_agree_on_sigterm_and_resume_to_the_one_process_run(tmp_path):
  """Two real processes (as on two hosts); SIGTERM to ONE of them: both save the same step and
  exit; the rerun resumes; the losses equal one process with all 8 devices, step by step.
  Runs are long (1000 steps) and stopped by SIGTERM, so no run can finish before its signal."""
  args = ARGS + ["--config.total_steps=1000", "--config.batch_size=16",
                 "--config.log_every_steps=1", "--config.checkpoint_every_steps=100000",
                 "--config.vis_every_steps=0", "--config.data=synthetic:256?seed=3",
                 "--config.export_at_end=false"]
  run = str(tmp_path / "run")
  metrics = os.path.join(run, "metrics.jsonl")
  procs = _launch_pair(args, run, portpicker.pick_unused_port())
  _wait_for_lines(metrics, 3)
  procs[1].send_signal(signal.SIGTERM)  # only one process is told
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
    assert "SIGTERM: saved step" in out, out[-3000:]
  assert "process 1 of 2" in outs[1]
  saved = [int(s) for s in os.listdir(os.path.join(run, "checkpoints")) if s.isdigit()]
  assert len(saved) == 1 and saved[0] >= 3, saved
  # Both processes wrote their data position of that one step: they agreed on it.
  data_dir = os.path.join(run, "checkpoints", str(saved[0]), "data")
  assert sorted(os.listdir(data_dir))[-2:] == ["process_0-of-2.json", "process_1-of-2.json"]
  # The rerun resumes from it (stopped again a few steps later, now via process 0).
  first = len(open(metrics).readlines())
  procs = _launch_pair(args, run, portpicker.pick_unused_port())
  _wait_for_lines(metrics, first + 4)
  procs[0].send_signal(signal.SIGTERM)
  for p in procs:
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out[-3000:]
  resumed = _rows(metrics)
  # The reference: the same config in THIS process on its 8 devices, stopped after as many
  # steps (stop_after ends the loop as a kill would; the schedule is the 1000-step one).
  from configs import stmem
  from ecgjax.train import loop
  config = stmem.get_config(ARGS[2].split(":", 1)[1])
  for arg in args[3:]:  # the same --config.key=value overrides
    key, value = arg[len("--config."):].split("=", 1)
    config[key] = (value == "true") if isinstance(config[key], bool) else type(config[key])(value)
  ref = str(tmp_path / "ref")
  loop.train(config, ref, stop_after=max(resumed))
  want = _rows(os.path.join(ref, "metrics.jsonl"))
  steps = list(range(1, max(resumed) + 1))
  assert sorted(resumed) == steps and saved[0] + 4 <= max(resumed)
  np.testing.assert_allclose([resumed[s] for s in steps], [want[s] for s in steps], rtol=1e-5)


@pytest.mark.slow
def test_bad_record_limit_uses_the_global_counts_and_stops_every_process(tmp_path):
  x = np.random.default_rng(0).standard_normal((64, 12, 2500)).astype(np.float32)
  x[::3, 2, 100] = np.nan  # a third of the records are bad
  np.save(tmp_path / "sig.npy", x)
  args = ARGS + ["--config.total_steps=50", "--config.batch_size=16",
                     "--config.log_every_steps=1", "--config.vis_every_steps=0",
                     "--config.max_bad_fraction=0.1",
                     f"--config.data=npy:{tmp_path}/sig.npy?fs=250",
                     "--config.export_at_end=false", "--config.checkpoint_every_steps=1000"]
  run = str(tmp_path / "run")
  procs = _launch_pair(args, run, portpicker.pick_unused_port())
  outs = [p.communicate(timeout=600)[0] for p in procs]  # neither may hang
  for p, out in zip(procs, outs):
    assert p.returncode == 2, out[-3000:]
    assert "(all 2 processes)" in out and "above max_bad_fraction=0.1" in out, out[-3000:]
    assert "Traceback" not in out
  # The step they stopped at was saved (by both), so nothing is lost.
  saved = [int(s) for s in os.listdir(os.path.join(run, "checkpoints")) if s.isdigit()]
  assert len(saved) == 1 and 0 < saved[0] < 50, saved
