"""Real entry points, run as a user would: pretrain/main.py, then the export it writes."""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ecgjax import data, models
from ecgjax.eval import embed
from ecgjax import export as export_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, env_extra=None, **kw):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1", **(env_extra or {})}
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("stmem"))
  proc = _run(["pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal",
               "--workdir", workdir, "--compilation_cache=workdir",
               "--config.total_steps=4", "--config.batch_size=8",
               "--config.log_every_steps=2", "--config.checkpoint_every_steps=2",
               "--config.vis_every_steps=4", "--config.data=synthetic:32?seed=5"])
  assert proc.returncode == 0, proc.stderr[-4000:]
  return workdir, proc


def test_pretrain_main_writes_metrics_checkpoints_export_and_picture(pretrained):
  workdir, proc = pretrained
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == [2, 4]
  assert all(np.isfinite(r["loss"]) and "lr" in r for r in records)
  assert "step 4/4" in proc.stderr  # the console progress line
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert os.path.isfile(os.path.join(workdir, "plots", "reconstruction_0000004.png"))
  assert os.path.isfile(os.path.join(workdir, "export", "config.json"))
  # --compilation_cache=workdir (the default without $ECGJAX_COMPILATION_CACHE): the step is in it.
  assert any(f.startswith("jit_train_step") for f in os.listdir(os.path.join(workdir, "jax_cache")))


def test_rerun_in_same_workdir_resumes_and_does_not_retrain(pretrained):
  workdir, _ = pretrained
  proc = _run(["pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal",
               "--workdir", workdir, "--config.total_steps=4", "--config.batch_size=8",
               "--config.data=synthetic:32?seed=5"])
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert "resuming from checkpoint 4" in proc.stderr


def test_bad_config_key_is_named():
  proc = _run(["pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal",
               "--workdir", "/tmp/never", "--config.batch_sise=8"])
  assert proc.returncode != 0
  assert "batch_sise" in proc.stderr


def test_export_load_embed_round_trip(pretrained):
  workdir, _ = pretrained
  exp = export_lib.load_export(os.path.join(workdir, "export"))
  assert exp.config["model"] == "st_mem" and exp.config["variant"] == "mu"
  assert exp.dim == 64
  pre = data.Preprocessing.of(exp.contract)
  assert (pre.fs, pre.samples) == (250.0, 2250)
  src = data.open_source("synthetic:3?seed=9")
  x = np.stack([pre(src[i]) for i in range(3)])
  emb = np.asarray(embed.make_embed_fn(exp)(exp.variables, x[:, None]))
  assert emb.shape == (3, 64) and np.isfinite(emb).all()
  # The same numbers as building the encoder by hand from the export's params.
  enc = models.build_model("st_mem_encoder", "mu", seq_len=2250)
  ref, _ = enc.apply({"params": exp.params}, x)
  np.testing.assert_allclose(emb, np.asarray(ref), rtol=1e-5, atol=1e-6)


def test_export_errors_name_the_problem(pretrained, tmp_path):
  workdir, _ = pretrained
  with pytest.raises(export_lib.ExportError, match="not an ecgjax export"):
    export_lib.load_export(str(tmp_path))
  bad = tmp_path / "bad"
  bad.mkdir()
  cfg = json.load(open(os.path.join(workdir, "export", "config.json")))
  cfg["format_version"] = 99
  (bad / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(export_lib.ExportError, match="format_version 99"):
    export_lib.load_export(str(bad))
  cfg["format_version"] = 3
  (bad / "config.json").write_text(json.dumps(cfg))
  (bad / cfg["params_file"]).write_bytes(b"garbage")
  with pytest.raises(export_lib.ExportError, match="corrupt"):
    export_lib.load_export(str(bad))


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path):
  workdir = str(tmp_path / "term")
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
  proc = subprocess.Popen(
      [sys.executable, "pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal",
       "--workdir", workdir, "--config.total_steps=100000", "--config.batch_size=8",
       "--config.log_every_steps=1", "--config.checkpoint_every_steps=100000",
       "--config.data=synthetic:32?seed=5"],
      cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + 300
  while time.time() < deadline and not (os.path.exists(metrics) and
                                        len(open(metrics).readlines()) >= 3):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "SIGTERM: saved step" in err
  steps = [int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit()]
  assert len(steps) == 1 and steps[0] >= 3  # a step no periodic save would have written


def test_grain_worker_processes_through_the_entry_point(tmp_path):
  proc = _run(["pretrain/main.py", "--config", "configs/stmem.py:variant=mu,runlocal",
               "--workdir", str(tmp_path), "--config.total_steps=2", "--config.batch_size=8",
               "--config.data_workers=2", "--config.data=synthetic:32?seed=5",
               "--config.export_at_end=false"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 2/2" in proc.stderr


def test_pretrain_on_the_shared_corpus_exports_its_preprocessing(shared_dir, tmp_path):
  proc = _run(["pretrain/main.py", "--config",
               "configs/stmem.py:variant=mu,runlocal,corpus=ptbxl250",
               "--workdir", str(tmp_path), "--config.total_steps=2", "--config.batch_size=8",
               "--config.vis_every_steps=0"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  exp = export_lib.load_export(str(tmp_path / "export"))
  assert exp.contract.standardize == "per_lead"
  assert tuple(exp.contract.bandpass) == (0.5, 40.0)
  assert exp.config["training"]["data"].startswith("npy:")


@pytest.mark.parametrize("config", ["configs/stmem.py:variant=mu,runlocal",
                                    "configs/ecgfm.py:variant=mu,runlocal",
                                    "configs/hybrid.py:variant=mu,preset=hybrid,runlocal"])
def test_every_config_file_runs_through_the_entry_point(config, tmp_path):
  """Config files are loaded by path (not as a package): each must import and train. (The
  hybrid file's other presets train in-process in tests/test_ecgfm_cmsc.py.)"""
  # (configs/finetune.py runs through finetune/finetune.py: see the test below.)
  proc = _run(["pretrain/main.py", "--config", config, "--workdir", str(tmp_path),
               "--config.total_steps=1", "--config.batch_size=8", "--config.log_every_steps=1",
               "--config.data_workers=0", "--config.export_at_end=false"])
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "step 1/1" in proc.stderr


# configs/finetune.py is not a pretraining config: it runs through finetune/finetune.py.
# One backbone through the entry point: the others share every line of it but the model,
# which tests/test_finetune_train.py builds and trains for each backbone.
@pytest.mark.parametrize("config", ["configs/finetune.py:backbone=net1d,fs=100,runlocal"])
def test_finetune_config_runs_through_its_entry_point_and_report_reads_it(config, tmp_path):
  env = {"JAX_NUM_CPU_DEVICES": "2"}  # two devices: the paired batch is split across them
  proc = _run(["finetune/finetune.py", "--config", config, "--workdir", str(tmp_path),
               "--config.epochs=1", "--config.data=synthetic:40?seed=1&fs=100&seconds=10",
               "--config.input.samples=400", "--config.batch_size=8",
               "--config.bootstrap=20"], env_extra=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "macro AUROC" in proc.stdout and "split1 done" in proc.stderr
  with open(tmp_path / "results.json") as f:
    results = json.load(f)
  assert results["n_splits"] == 2 and 0 <= results["macro_auroc"] <= 1
  report = _run(["finetune/report.py", "--predictions", str(tmp_path / "predictions.csv"),
                 "--bootstrap=20", "--json"])
  assert report.returncode == 0, report.stderr[-3000:]
  summary = json.loads(report.stdout.strip().splitlines()[-1])
  assert summary["n_records"] == 40
  assert summary["macro_auroc"] == pytest.approx(results["macro_auroc"])
