"""The benchmark harnesses behind README numbers: the PyTorch step (the port, and the official
code through --official), and the one-call GPU session script at its smoke sizes."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytest.importorskip("torch")

# A stand-in for a bakqui/ST-MEM checkout: the one name the harness imports, the same call
# contract (model(series) -> {"loss": ...}), tiny.
_FAKE_ST_MEM = textwrap.dedent('''
    import torch

    class _Tiny(torch.nn.Module):
      def __init__(self, **kw):
        super().__init__()
        self.kw = kw
        self.lin = torch.nn.Linear(kw["patch_size"], kw["patch_size"])

      def forward(self, series, mask_ratio=0.75):
        x = series.reshape(series.shape[0], -1, self.kw["patch_size"])
        return {"loss": ((self.lin(x) - x) ** 2).mean()}

    def st_mem_vit_base_dec256d4b(**kw):
      assert kw == dict(seq_len=2250, patch_size=75, num_leads=12, norm_pix_loss=True), kw
      return _Tiny(**kw)
    ''')


def _run(args, **kw):
  return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True,
                        timeout=120, **kw)


def test_torch_step_times_an_official_checkout_and_refuses_a_wrong_dir(tmp_path):
  (tmp_path / "models").mkdir()
  (tmp_path / "models" / "__init__.py").write_text("")
  (tmp_path / "models" / "st_mem.py").write_text(_FAKE_ST_MEM)
  out = _run(["bench/torch_st_mem_step.py", "--official", str(tmp_path), "--batch", "2",
              "--steps", "2"])
  assert out.returncode == 0, out.stderr[-2000:]
  row = json.loads(out.stdout.strip().splitlines()[-1])
  assert row["model"] == "official st_mem" and row["batch"] == 2 and row["samples_per_s"] > 0
  assert row["params"] == 75 * 75 + 75
  bad = _run(["bench/torch_st_mem_step.py", "--official", str(tmp_path / "nowhere")])
  assert bad.returncode != 0 and "no models/st_mem.py there" in bad.stderr


def test_torch_port_runs_under_bf16_autocast():
  out = _run(["bench/torch_st_mem_step.py", "--variant", "mu", "--batch", "2", "--steps", "1",
              "--amp"])
  assert out.returncode == 0, out.stderr[-2000:]
  row = json.loads(out.stdout.strip().splitlines()[-1])
  assert row["amp_bf16"] is True and row["device"] == "cpu" and row["loss"] > 0


def test_gpu_session_script_smoke(tmp_path):
  env = dict(os.environ, GPU_SESSION_SMOKE="1", OUT=str(tmp_path), PYTHON=sys.executable,
             WHEELS=str(tmp_path / "no-wheels"))  # a checkout's .whl holds Python 3.12 wheels
  out = subprocess.run(["bash", "bench/gpu_session.sh"], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env=env)
  assert out.returncode == 0, out.stderr[-2000:]
  status = (tmp_path / "status.txt").read_text()
  assert all(f"{stage} rc=0" in status for stage in ("st_mem", "ecg_fm", "torch_st_mem_2",
                                                     "data")), status
  summary = (tmp_path / "summary.txt").read_text()
  for model in ('"st_mem"', '"ecg_fm"', '"torch st_mem"', "data_throughput"):
    assert model in summary, summary
