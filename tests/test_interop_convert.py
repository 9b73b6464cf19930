"""Weight import end to end: checkpoint files -> `python -m ecgjax.interop convert` / `convert`
-> an ordinary export -> embeddings of raw synthetic records through the export's own contract,
equal to the PyTorch model on the same preprocessed input. Safe loading (weights_only), the
official golden checkpoints, and converted exports that work without torch."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

from ecgjax import data, interop, models
from ecgjax import eval as eval_lib
from ecgjax.interop import conversion
from ecgjax.interop.__main__ import main as cli_main
from ecgjax.interop import state as state_lib
from ecgjax import export as export_lib
from tests.helpers import rel_err

REPO = pathlib.Path(__file__).resolve().parents[1]
TOL = 1e-5
SYNTHETIC = "synthetic:3?seed=4&fs=500&seconds=10"


def _torch():
  return pytest.importorskip(
      "torch", reason="reading .pth files needs torch (pip install 'ecgjax[torch]'; CI has it)")


def _cli(*args, timeout=300):
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  return subprocess.run([sys.executable, "-m", "ecgjax.interop", *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout)


def _check_embeddings(export_dir, forward) -> float:
  """Embeds SYNTHETIC through the export (the finetune/ path) and with `forward` (torch) on the
  crops the export's contract makes of each raw record; returns the relative error."""
  export = export_lib.load_export(str(export_dir))
  eval_lib.check_export(export)
  source = data.open_source(SYNTHETIC)
  n_crops = eval_lib.default_n_crops(export, source)
  got = eval_lib.embed_source(export, source, batch_size=2, n_crops=n_crops, progress=False)
  pp = data.Preprocessing.of(export.contract)
  crops = [pp.views_of(pp.prepare(source[i])[0], n_crops) for i in range(len(source))]
  want = np.stack([forward(c).mean(0) for c in crops])
  assert got["embeddings"].shape == want.shape
  return rel_err(got["embeddings"], want)


def _torch_forward(model):
  torch = _torch()

  def forward(x):
    with torch.no_grad():
      out = model(torch.from_numpy(np.ascontiguousarray(x)))
    if isinstance(model, _refs().ECGFM):  # scripts/embs.py's pooling of each segment
      from tests import reference_pipelines  # pylint: disable=g-import-not-at-top
      return np.stack([reference_pipelines.embs_pool(h) for h in out[1].numpy()])
    return out[1 if isinstance(model, _refs().Net1D) else 0].numpy()
  return forward


def _refs():
  _torch()
  from tests import interop_refs  # pylint: disable=g-import-not-at-top
  return interop_refs


def test_st_mem_file_to_embeddings(tmp_path):
  torch, refs = _torch(), _refs()
  torch.manual_seed(0)
  enc = refs.randomize(refs.STMEMEncoder(), seed=1)
  path = tmp_path / "st_mem_encoder.pth"
  torch.save({"model": enc.state_dict(), "epoch": 799}, path)
  conv = interop.convert("st-mem", str(path), str(tmp_path / "export"))
  assert conv.encoder["variant"] == "mu"
  err = _check_embeddings(tmp_path / "export", _torch_forward(enc))
  print(f"st-mem export embeddings (3 crops of 2250 at 250 Hz) rel err {err:.1e}")
  assert err < TOL
  config = json.loads((tmp_path / "export" / "config.json").read_text())
  origin = config["training"]["converted_from"]
  assert origin["source"] == "st-mem" and len(origin["checkpoint_sha256"]) == 64
  # The model card says the converted weights keep ST-MEM's non-commercial licence.
  card = (tmp_path / "export" / "README.md").read_text()
  assert "CC BY-NC 4.0" in card and origin["checkpoint_sha256"] in card
  report = json.loads((tmp_path / "export" / conversion.REPORT_FILE).read_text())
  assert report["ok"] and report["converted"] == len(enc.state_dict())


def test_ecgfounder_file_to_embeddings(tmp_path):
  torch, refs = _torch(), _refs()
  torch.manual_seed(0)
  net = refs.randomize(refs.Net1D(), seed=1)
  path = tmp_path / "12_lead_ECGFounder.pth"
  torch.save({"state_dict": net.state_dict()}, path)
  interop.convert("ecgfounder", str(path), str(tmp_path / "export"))
  err = _check_embeddings(tmp_path / "export", _torch_forward(net))
  print(f"ecgfounder export embeddings (5000 at 500 Hz, notch, band-pass, baseline) "
        f"rel err {err:.1e}")
  assert err < TOL


def test_ecg_fm_cli_to_embeddings_and_failures(tmp_path, capsys):
  torch, refs = _torch(), _refs()
  torch.manual_seed(0)
  net = refs.randomize(refs.ECGFM(), seed=1)
  cfg = {"model": {"encoder_attention_heads": 2, "layer_norm_first": False}}
  good = tmp_path / "ecg_fm.pt"
  torch.save({"cfg": cfg, "model": net.state_dict(), "optimizer_history": [],
              "extra_state": {"train_iterator": {"epoch": 2}}}, good)
  out = tmp_path / "export"
  res = _cli("convert", "--from", "ecg-fm", str(good), str(out))
  assert res.returncode == 0, res.stderr
  assert "wrote export" in res.stdout and "500 Hz x 2500 samples" in res.stdout
  err = _check_embeddings(out, _torch_forward(net))
  with capsys.disabled():
    print(f"ecg-fm export embeddings via the CLI (2500 at 500 Hz, per-lead z) rel err {err:.1e}")
  assert err < TOL

  # A key missing: exit 1, every problem on stderr, nothing written.
  state = dict(net.state_dict())
  del state["encoder.layers.1.final_layer_norm.weight"]
  bad = tmp_path / "bad.pt"
  torch.save({"cfg": cfg, "model": state}, bad)
  capsys.readouterr()
  assert cli_main(["convert", "--from", "ecg-fm", str(bad), str(tmp_path / "bad_export")]) == 2
  res = capsys.readouterr()
  assert "MISSING" in res.err and "encoder.layers.1.final_layer_norm.weight" in res.err
  assert not (tmp_path / "bad_export").exists()
  allow = ["--allow-missing", r"final_layer_norm\.weight$"]
  assert cli_main(["convert", "--from", "ecg-fm", str(bad), str(tmp_path / "bad_export"),
                   "--dry-run", *allow]) == 0
  assert "dry run" in capsys.readouterr().out and not (tmp_path / "bad_export").exists()
  assert cli_main(["convert", "--from", "ecg-fm", str(bad), str(tmp_path / "bad_export"),
                   *allow]) == 0
  res = capsys.readouterr()
  assert "RANDOM INIT" in res.out and (tmp_path / "bad_export" / "config.json").exists()


def test_loading_never_runs_pickled_code(tmp_path):
  torch = _torch()
  from ecgjax.interop import torch_io  # pylint: disable=g-import-not-at-top
  marker = tmp_path / "ran"

  class Payload:
    def __reduce__(self):
      return (pathlib.Path.touch, (marker,))

  path = tmp_path / "evil.pth"
  torch.save({"state_dict": {"first_conv.conv.weight": torch.zeros(2, 2, 2)}, "x": Payload()},
             path)
  with pytest.raises(torch_io.CheckpointError, match="cannot be loaded safely.*pathlib"):
    torch_io.load_checkpoint(str(path))
  assert not marker.exists()
  assert cli_main(["convert", "--from", "ecgfounder", str(path), str(tmp_path / "out")]) == 2
  assert not marker.exists() and not (tmp_path / "out").exists()
  # Plain data beside the tensors (fairseq's argparse args, NumPy scalars) is fine.
  import argparse  # pylint: disable=g-import-not-at-top
  torch.save({"args": argparse.Namespace(encoder_attention_heads=2), "model": {"w": torch.ones(
      2, dtype=torch.bfloat16)}, "extra_state": {"loss": np.float64(0.5)}}, path)
  got = torch_io.load_checkpoint(str(path))
  assert got["args"] == {"encoder_attention_heads": 2} and got["model"]["w"].dtype == np.float32


# --------------------------------------------------------------- no torch needed from here on


def _golden(shared_dir, name):
  z = np.load(shared_dir / "golden" / name)
  return {k: z[k] for k in z.files}


def test_official_golden_checkpoints_convert_exactly(shared_dir):
  g = _golden(shared_dir, "st_mem_tiny.npz")
  state = {k[len("param/"):]: v for k, v in g.items() if k.startswith("param/")}
  conv = interop.convert_state_dict("st-mem", state)  # the official full MAE checkpoint
  module = models.build_model(conv.encoder["module"], conv.encoder["variant"],
                                             **conv.encoder["overrides"])
  emb, _ = jax.jit(module.apply)({"params": conv.params}, g["input"])
  assert rel_err(emb, g["embedding"]) < TOL
  n = _golden(shared_dir, "net1d_tiny_nobn.npz")
  conv = interop.convert_state_dict(
      "ecgfounder", {"state_dict": {k[6:]: v for k, v in n.items() if k.startswith("param/")}})
  module = models.build_model("net1d", conv.encoder["variant"],
                                             **conv.encoder["overrides"])
  feat, _ = jax.jit(module.apply)({"params": conv.params}, n["input"])
  assert rel_err(feat, n["features"]) < TOL


def test_converted_export_needs_no_torch(shared_dir, tmp_path):
  n = _golden(shared_dir, "net1d_tiny_nobn.npz")
  conv = interop.convert_state_dict(
      "ecgfounder", {"state_dict": {k[6:]: v for k, v in n.items() if k.startswith("param/")}})
  interop.save_conversion(conv, str(tmp_path / "export"))
  script = f"""
import importlib.abc, sys

class NoTorch(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path, target=None):
    if name.split(".")[0] == "torch":
      raise ModuleNotFoundError("torch is blocked in this test")

sys.meta_path.insert(0, NoTorch())  # any import of torch now fails
from ecgjax import data, eval as eval_lib
from ecgjax.interop import torch_io
from ecgjax import export as export_lib
exp = export_lib.load_export({str(tmp_path / "export")!r})
eval_lib.check_export(exp)
d = eval_lib.embed_source(exp, data.open_source({SYNTHETIC!r}), batch_size=3, progress=False)
try:
  torch_io.load_checkpoint({str(tmp_path / "export" / "config.json")!r})
except ImportError as e:
  print("hint:", e)
assert "torch" not in sys.modules
print("embedded", d["embeddings"].shape)
"""
  res = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "JAX_PLATFORMS": "cpu"}, timeout=300)
  assert res.returncode == 0, res.stderr
  assert "embedded (3, 64)" in res.stdout and "pip install 'ecgjax[torch]'" in res.stdout


def test_unwrap_and_prefix_helpers():
  w = np.zeros(2)
  assert state_lib.unwrap_state_dict({"state_dict": {"module.a": w, "module.b": w}})[0].keys() \
      == {"a", "b"}
  assert state_lib.unwrap_state_dict({"cfg": {}, "model": {"x": w}})[1] == ["model"]
  with pytest.raises(ValueError, match="no state dict"):
    state_lib.unwrap_state_dict({"cfg": {"a": 1}})
  assert state_lib.find_prefix({"encoder.sep_embedding": w, "sep_embedding_x": w},
                               "sep_embedding") == "encoder."
  tree = {"a": {"b": None, "c": w}}
  assert state_lib.unflatten(state_lib.flatten(tree)) == tree
