"""Two real JAX processes (as on two hosts) train exactly as one process with all devices."""

import json
import os
import subprocess
import sys

import numpy as np
import portpicker
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARGS = ["pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal",
        "--config.total_steps=3", "--config.batch_size=8", "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=3", "--config.vis_every_steps=0",
        "--config.data=synthetic:64?seed=3", "--config.export_at_end=false"]


def _env(n_devices):
  return {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": str(n_devices)}


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line)["loss"] for line in f]


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
  port = portpicker.pick_unused_port()
  multi = str(tmp_path / "multi")
  procs = [subprocess.Popen(
      [sys.executable, *ARGS, "--workdir", multi, "--coordinator_address", f"localhost:{port}",
       "--num_processes", "2", "--process_id", str(i)],
      cwd=REPO, env=_env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
      for i in range(2)]
  outs = [p.communicate(timeout=600)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]
  assert "process 1 of 2" in outs[1]
  # Each process saved its own data-iterator position beside the shared array shards.
  data_dir = os.path.join(multi, "checkpoints", "3", "data")
  assert sorted(os.listdir(data_dir))[-2:] == ["process_0-of-2.json", "process_1-of-2.json"]

  single = str(tmp_path / "single")
  proc = subprocess.run([sys.executable, *ARGS, "--workdir", single], cwd=REPO, env=_env(8),
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  np.testing.assert_allclose(_losses(multi), _losses(single), rtol=1e-5)
