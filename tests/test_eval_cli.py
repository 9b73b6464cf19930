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
