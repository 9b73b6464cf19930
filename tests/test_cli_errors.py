"""A user's mistake at any entry point: one line naming it, exit status 2, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRETRAIN = ["pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal",
            "--workdir", "{tmp}/w", "--config.total_steps=1", "--config.batch_size=4",
            "--config.data=synthetic:8"]
FINETUNE = ["finetune/finetune.py", "--config", "configs/finetune.py:backbone=net1d,variant=mu",
            "--workdir", "{tmp}/f", "--config.data=synthetic:8"]


def _run(args, tmp):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  return subprocess.run([sys.executable, *[a.format(tmp=tmp) for a in args]], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=300)


CASES = {
    "misspelt_key": (PRETRAIN + ["--config.totl_steps=3"],
                     r"main.py: error: --config.totl_steps: config has no key 'totl_steps'; "
                     r"did you mean 'total_steps'\?"),
    "misspelt_nested_key": (PRETRAIN + ["--config.input.fz=100"],
                            r"--config.input.fz: config.input has no key 'fz'"),
    "key_under_a_value": (PRETRAIN + ["--config.model.depth=3"],
                          r"--config.model.depth: config.model is a str \('st_mem'\)"),
    "bad_value_type": (PRETRAIN + ["--config.total_steps=ten"],
                       r"flag --config.total_steps=ten: invalid literal"),
    "unknown_flag": (PRETRAIN + ["--num_procesess=2"], r"Unknown command line flag 'num_procesess'"),
    "missing_config_file": (["pretrain/main.py", "--config", "configs/stmemm.py",
                             "--workdir", "{tmp}/w"],
                            r"--config: cannot load the config file: .*No such file.*stmemm.py"),
    "unknown_config_argument": (["pretrain/main.py", "--config", "configs/stmem.py:varient=mu",
                                 "--workdir", "{tmp}/w"], r"flag --config=configs/stmem.py:varient=mu: unknown config argument 'varient'"),
    "unknown_preset": (["pretrain/main.py", "--config", "configs/hybrid.py:preset=maee",
                        "--workdir", "{tmp}/w"], r"preset='maee': known presets are"),
    "unknown_variant": (PRETRAIN + ["--config.variant=Q/75"], r"unknown ST-MEM variant 'Q/75'"),
    "unknown_data_format": (PRETRAIN + ["--config.data=hdf9:/x"],
                            r"unknown data format 'hdf9'; known formats: .*ptbxl"),
    "unknown_data_option": (PRETRAIN + ["--config.data=synthetic:8?sede=1"],
                            r"unknown option 'sede' for format 'synthetic'"),
    "missing_data_path": (PRETRAIN + ["--config.data=ptbxl:{tmp}/no_ptbxl"],
                          r"no such file or directory '.*no_ptbxl'"),
    "finetune_misspelt_key": (FINETUNE + ["--config.lable_smoothing=0.1"],
                              r"finetune.py: error: --config.lable_smoothing: config has no "
                              r"key 'lable_smoothing'"),
    "finetune_not_an_export": (FINETUNE + ["--config.export={tmp}"],
                               r"finetune.py: error: .* is not an ecgjax export"),
    "embed_not_an_export": (["finetune/embed.py", "--export", "{tmp}", "--data", "synthetic:4",
                             "--out", "{tmp}/e.npz"], r"embed.py: error: .*not an ecgjax export"),
    "embed_missing_data": (["finetune/embed.py", "--export", "{tmp}", "--data", "{tmp}/nope.npy",
                            "--out", "{tmp}/e.npz"], r"embed.py: error: "),
    "explain_not_a_run": (["finetune/explain.py", "--run", "{tmp}", "--data", "synthetic:2",
                           "--out", "{tmp}/o"], r"explain.py: error: .*not a fine-tuning run"),
    "probe_missing_flag_value": (["finetune/probe.py", "--export"],
                                 r"probe.py: error: .*--export"),
    "data_cli_unknown_format": (["-m", "ecgjax.data", "inspect", "nope:/x"],
                                r"python -m ecgjax.data: error: unknown data format 'nope'"),
    "data_cli_misspelt_flag": (["-m", "ecgjax.data", "inspect", "--jsn", "synthetic:3"],
                               r"python -m ecgjax.data: error: Unknown command line flag 'jsn'"),
    "interop_missing_checkpoint": (["-m", "ecgjax.interop", "convert", "--from", "st-mem",
                                    "{tmp}/none.pth", "{tmp}/out"],
                                   r"python -m ecgjax.interop: error: .*none.pth"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_user_mistake_is_one_line_and_exit_2(case, tmp_path):
  import re  # pylint: disable=g-import-not-at-top
  args, pattern = CASES[case]
  proc = _run(args, tmp_path)
  assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert re.search(pattern, errors[0]), errors[0]


def test_a_bug_in_a_config_file_keeps_its_traceback(tmp_path):
  # A config that crashes is a bug to debug, not a user mistake: the traceback stays.
  cfg = tmp_path / "broken.py"
  cfg.write_text("def get_config():\n  return undefined_name\n")
  proc = _run(["pretrain/main.py", "--config", str(cfg), "--workdir", "{tmp}/w"], tmp_path)
  assert proc.returncode not in (0, 2)
  assert "Traceback" in proc.stderr and "NameError" in proc.stderr
