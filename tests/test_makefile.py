"""`make setup` under CI fails loudly when torch cannot be installed (the weight-import tests
must never become silent skips there); off CI it only says so. Run with a stand-in Python whose
pip refuses torch, so nothing is installed."""

import os
import pathlib
import shutil
import stat
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _fake_python(path: pathlib.Path) -> None:
  # `python -m venv DIR` creates DIR/bin/python (this same script); pip succeeds for
  # everything except torch.
  path.write_text(
      "#!/bin/sh\n"
      'if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin"; '
      f'cp "{path}" "$3/bin/python"; exit 0; fi\n'
      'case "$*" in *torch==*) echo "ERROR: No matching distribution" >&2; exit 1;; esac\n'
      "exit 0\n")
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("ci", ["true", ""])
def test_setup_fails_loudly_without_torch_under_ci(tmp_path, ci):
  if shutil.which("make") is None:
    pytest.skip("make is not installed")
  fake = tmp_path / "python"
  _fake_python(fake)
  env = {k: v for k, v in os.environ.items() if k != "CI"}
  if ci:
    env["CI"] = ci
  res = subprocess.run(["make", "setup", f"VENV={tmp_path / 'venv'}", f"PYTHON={fake}"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
  if ci:
    assert res.returncode != 0
    assert "torch 2.13.0+cpu could not be installed under CI" in res.stderr
    assert not (tmp_path / "venv" / ".installed").exists()
  else:
    assert res.returncode == 0, res.stderr
    assert "the weight-import tests will skip" in res.stdout
    assert (tmp_path / "venv" / ".installed").exists()
