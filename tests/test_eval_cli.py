"""The embed/probe command lines on a real export: automatic crops, fusion, bad exports."""

import json
import shutil

import pytest

from ecgjax import eval as eval_lib
from tests.test_probe import NAMES, _run, _save_mu_export


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> str:
  """A random-init mu ST-MEM encoder exported like pretraining exports it."""
  return _save_mu_export(tmp_path_factory.mktemp("run") / "export")


def test_embed_cli_then_probe_fuses_the_file_with_an_export(export_dir, tmp_path):
  out = tmp_path / "emb.npz"
  spec = "synthetic:40?seed=6"
  proc = _run("finetune/embed.py", "--export", export_dir, "--data", spec, "--out", str(out))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "(3 crop(s) per record)" in proc.stdout  # ST-MEM on 2500-sample records: automatic
  d = eval_lib.load_embeddings(str(out))
  assert d["embeddings"].shape == (40, 64) and tuple(d["label_names"]) == NAMES
  proc = _run("finetune/probe.py", "--export", export_dir, "--embeddings", str(out),
              "--data", spec, "--protocol", "groupcv", "--folds", "3", "--bootstrap", "100",
              "--labels", "NORM,AF", "--json")
  assert proc.returncode == 0, proc.stderr[-3000:]
  res = json.loads(proc.stdout.strip().splitlines()[-1])
  assert res["sources"] == [export_dir, str(out)] and res["protocol"] == "groupcv"
  assert list(res["per_label"]) == ["NORM", "AF"] and len(res["per_fold"]) == 3
  assert res["n_train"] + res["n_test"] == 40


def test_cli_names_an_export_of_another_model(export_dir, tmp_path):
  bad = tmp_path / "bad_export"
  shutil.copytree(export_dir, bad)
  config = json.loads((bad / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps(dict(config, variant="S/75")))
  for script, extra in (("finetune/probe.py", ["--data", "synthetic:8"]),
                        ("finetune/embed.py", ["--data", "synthetic:8", "--out",
                                               str(tmp_path / "e.npz")])):
    proc = _run(script, "--export", str(bad), *extra)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "is incompatible with the model its config names (st_mem S/75" in proc.stderr
    assert "parameter(s)" in proc.stderr and "with another shape" in proc.stderr


def test_tsne_command_draws_the_same_balanced_records_for_every_model(tmp_path):
  import csv
  import numpy as np
  rng = np.random.default_rng(0)
  n = 300
  y = np.zeros((n, 2), np.float32)
  y[:60, 0] = 1  # 60 MI of 300: the figure draws 50 and 50
  y[::3, 1] = 1
  ids = np.array([f"r{i}" for i in range(n)])
  for name, sep in (("good", 3.0), ("poor", 0.0)):
    x = rng.normal(size=(n, 8)) + sep * y[:, :1]
    order = rng.permutation(n) if name == "poor" else np.arange(n)  # rows in another order
    eval_lib.save_embeddings(str(tmp_path / f"{name}.npz"), {
        "embeddings": x[order], "record_id": ids[order], "patient_id": ids[order],
        "fold": np.zeros(n, np.int64), "labels": y[order], "label_names": np.array(["MI", "X"])})
  out = tmp_path / "fig" / "tsne_mi.png"
  out.parent.mkdir()
  proc = _run("finetune/tsne.py", "--embeddings", str(tmp_path / "good.npz"), "--embeddings",
              str(tmp_path / "poor.npz"), "--label", "MI", "--points", "100", "--out", str(out))
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert out.stat().st_size > 10_000 and "100 records (50 MI, 50 without), 2 model(s)" in proc.stdout
  rows = list(csv.DictReader(open(tmp_path / "fig" / "tsne_mi.csv")))
  assert len(rows) == 100 and sum(int(r["MI"]) for r in rows) == 50
  assert set(rows[0]) == {"record_id", "MI", "good_x", "good_y", "poor_x", "poor_y"}
  # The labels follow each record (the second file's rows were shuffled, matched by record_id).
  assert all(int(r["MI"]) == int(int(r["record_id"][1:]) < 60) for r in rows)
  bad = _run("finetune/tsne.py", "--embeddings", str(tmp_path / "good.npz"), "--label", "HYP")
  assert bad.returncode == 2 and "--label='HYP' is not in" in bad.stderr
