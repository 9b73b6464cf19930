"""Back to PyTorch: `python -m ecgjax.interop export --to st-mem|ecgfounder|ecg-fm`.

What must hold: the official goldens come back key for key and bit for bit (import -> export),
ecgjax-made encoders load into the torch references with strict=True and give ecgjax's
embeddings, export -> import is exact, and every refusal names what is wrong.
"""

import numpy as np
import pytest

import jax
import jax.numpy as jnp

from ecgjax import contract as contract_lib
from ecgjax import export as export_lib
from ecgjax import interop, models
from ecgjax.interop import net1d as net1d_lib
from ecgjax.interop import to_torch
from ecgjax.interop.__main__ import main as cli_main
from tests.helpers import rel_err


def _golden(shared_dir, name):
  z = np.load(shared_dir / "golden" / name)
  return {k[len("param/"):]: z[k] for k in z.files if k.startswith("param/")}


def test_official_goldens_come_back_key_for_key(shared_dir):
  state = _golden(shared_dir, "st_mem_tiny.npz")  # the official full MAE checkpoint
  back = to_torch.st_mem_state_dict(interop.convert_state_dict("st-mem", state).params)
  encoder = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
  assert sorted(back) == sorted(encoder)  # exactly the encoder's keys: no head, no decoder
  for k, v in encoder.items():
    assert back[k].dtype == v.dtype and np.array_equal(back[k], v), k
  assert back["pos_embedding"].shape[0] == 1 and back["lead_embeddings.11"].ndim == 1

  nobn = _golden(shared_dir, "net1d_tiny_nobn.npz")
  conv = interop.convert_state_dict("ecgfounder", {"state_dict": nobn})
  back, fresh = to_torch.net1d_state_dict({"params": conv.params}, num_labels=5)
  assert sorted(back) == sorted(nobn)
  assert set(fresh) == {k for k in nobn if net1d_lib.is_bn_key(k) or k.startswith("dense.")}
  for k in set(nobn) - set(fresh):
    assert np.array_equal(back[k], nobn[k]), k
  assert not back["dense.weight"].any() and back["first_bn.running_var"].min() == 1.0

  # BN on (AnyECG-CCTA): the statistics travel too; only the never-applied bn1 is new.
  bn = _golden(shared_dir, "net1d_tiny_bn.npz")
  variables = net1d_lib.params_from_torch_state_dict(bn, use_bn=True, ignore_unused_bn=True)
  back, fresh = to_torch.net1d_state_dict(variables)
  assert sorted(back) == sorted(bn)
  first_bn1 = "stage_list.0.block_list.0.bn1."
  assert {k for k in fresh if not k.endswith("num_batches_tracked")} == {
      first_bn1 + leaf for leaf in ("weight", "bias", "running_mean", "running_var")}
  for k in bn:
    if not k.startswith(first_bn1) and not k.endswith("num_batches_tracked"):
      assert np.array_equal(back[k], bn[k]), k


def _mu_export(directory, module_name: str, preset: str, samples: int, **overrides) -> str:
  """A mu encoder export with non-trivial weights; `samples` is the init length only (the
  contract is the preset's; Net1D's weights do not depend on the length)."""
  module = models.build_model(module_name, "mu", **overrides)
  x = jnp.zeros((1, 12, samples), jnp.float32)
  params = jax.jit(module.init)(jax.random.PRNGKey(3), x)["params"]
  # Non-trivial norms and biases, so that a swapped weight/bias cannot pass unseen.
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(4), len(leaves))
  params = jax.tree.unflatten(tree, [v + 0.05 * jax.random.normal(k, v.shape)
                                     for v, k in zip(leaves, keys)])
  out = jax.eval_shape(module.apply, {"params": params}, x)[0]
  desc = {"model": module_name.replace("_encoder", ""), "variant": "mu", "module": module_name,
          "overrides": overrides, "embedding": {"dim": int(out.shape[-1]), "pooling": "mean"}}
  return export_lib.save_export(str(directory), params, desc,
                                contract_lib.preset(preset).to_dict())


def _torch_and_refs():
  torch = pytest.importorskip("torch", reason="the torch extra is not installed")
  from tests import interop_refs  # pylint: disable=g-import-not-at-top
  return torch, interop_refs


def _jax_embedding(path, x):
  exp = export_lib.load_export(path)
  out, _ = jax.jit(exp.module.apply)(exp.variables, jnp.asarray(x))
  return np.asarray(out)


def test_ecgjax_encoders_run_in_the_torch_references(tmp_path, capsys):
  torch, refs = _torch_and_refs()
  rng = np.random.default_rng(0)

  # ST-MEM: the encoder state dict, strict into ST-MEM's encoder.
  path = _mu_export(tmp_path / "st", "st_mem_encoder", "st_mem", 2250)
  assert cli_main(["export", "--to", "st-mem", path, str(tmp_path / "st.pth")]) == 0
  assert "round trip" in capsys.readouterr().out
  state = torch.load(tmp_path / "st.pth", weights_only=True)
  assert all(v.dtype == torch.float32 for v in state.values())
  assert state["pos_embedding"].shape == (1, 32, 64)
  net = refs.STMEMEncoder()
  net.load_state_dict(state, strict=True)
  x = rng.normal(size=(2, 12, 2250)).astype(np.float32)
  with torch.no_grad():
    want = net.eval()(torch.from_numpy(x))[0].numpy()
  assert rel_err(_jax_embedding(path, x), want) < 1e-5
  # export -> import: the converter takes the file back to the same parameters.
  conv = interop.convert("st-mem", str(tmp_path / "st.pth"), None)
  exp = export_lib.load_export(path)
  to_torch._check_same(exp.params, conv.params, "ST-MEM")  # pylint: disable=protected-access

  # ECGFounder: {'state_dict': ...} of Net1D with its (unapplied) BatchNorms and a dense head.
  path = _mu_export(tmp_path / "n", "net1d", "ecgfounder", 1000, num_classes=0)
  assert cli_main(["export", "--to", "ecgfounder", path, str(tmp_path / "n.pth"),
                   "--num-labels", "5"]) == 0
  ckpt = torch.load(tmp_path / "n.pth", weights_only=True)
  net = refs.Net1D()
  net.load_state_dict(ckpt["state_dict"], strict=True)
  x = rng.normal(size=(2, 12, 1000)).astype(np.float32)  # Net1D takes any length
  with torch.no_grad():
    logits, feat = net.eval()(torch.from_numpy(x))
  assert rel_err(_jax_embedding(path, x), feat.numpy()) < 1e-5
  assert not logits.numpy().any()  # the new head starts at zero
  conv = interop.convert("ecgfounder", str(tmp_path / "n.pth"), None)
  to_torch._check_same(export_lib.load_export(path).params, conv.params, "Net1D")  # pylint: disable=protected-access

  # ECG-FM: a fairseq-signals classifier checkpoint, the encoder under encoder.w2v_model.
  path = _mu_export(tmp_path / "f", "ecg_fm_encoder", "ecg_fm", 2500)
  assert cli_main(["export", "--to", "ecg-fm", path, str(tmp_path / "f.pt"),
                   "--num-labels", "3"]) == 0
  ckpt = torch.load(tmp_path / "f.pt", weights_only=True)
  cfg = ckpt["cfg"]["model"]
  assert cfg["_name"] == "ecg_transformer_classifier" and cfg["num_labels"] == 3
  assert (cfg["encoder_layers"], cfg["encoder_embed_dim"], cfg["encoder_attention_heads"],
          cfg["conv_pos"], cfg["conv_pos_groups"]) == (2, 64, 2, 16, 4)
  enc = refs.ECGFM(spelling="old")  # fairseq's torch.nn.utils.weight_norm: weight_g / _v
  for name in ("mask_emb", "quantizer", "project_q", "final_proj"):  # pretraining only
    delattr(enc, name)
  classifier = torch.nn.Module()
  classifier.encoder = torch.nn.Module()
  classifier.encoder.w2v_model = enc
  classifier.proj = torch.nn.Linear(64, 3)
  classifier.load_state_dict(ckpt["model"], strict=True)
  x = rng.normal(size=(2, 12, 2500)).astype(np.float32)
  with torch.no_grad():
    want = enc.eval()(torch.from_numpy(x))[0].numpy()
  assert rel_err(_jax_embedding(path, x), want) < 1e-5
  conv = interop.convert("ecg-fm", str(tmp_path / "f.pt"), None)
  assert conv.report.ok and "proj.weight" in conv.report.dropped
  to_torch._check_same(export_lib.load_export(path).params, conv.params, "ECG-FM")  # pylint: disable=protected-access
  assert cli_main(["export", "--to", "ecg-fm", path, str(tmp_path / "g.pt"), "--num-labels",
                   "3", "--encoder-prefix", "encoder."]) == 0
  assert "encoder.feature_extractor.conv_layers.0.0.weight" in torch.load(
      tmp_path / "g.pt", weights_only=True)["model"]


def test_refusals_name_the_problem(tmp_path, capsys):
  st = _mu_export(tmp_path / "st", "st_mem_encoder", "st_mem", 2250)
  exp = export_lib.load_export(st)
  with pytest.raises(to_torch.ExportToTorchError, match="goes --to st-mem"):
    to_torch.export_to_torch(exp, "ecgfounder")
  with pytest.raises(to_torch.ExportToTorchError, match="unknown target"):
    to_torch.export_to_torch(exp, "hubert")
  fm = export_lib.load_export(_mu_export(tmp_path / "f", "ecg_fm_encoder", "ecg_fm", 2500))
  with pytest.raises(to_torch.ExportToTorchError, match="--num-labels"):
    to_torch.export_to_torch(fm, "ecg-fm")
  n = export_lib.load_export(_mu_export(tmp_path / "n", "net1d", "ecgfounder", 1000,
                                        num_classes=0))
  with pytest.raises(to_torch.ExportToTorchError, match="pass --num-labels"):
    to_torch.export_to_torch(n, "ecgfounder")
  head = export_lib.load_export(_mu_export(tmp_path / "h", "net1d", "ecgfounder", 1000,
                                           num_classes=4))
  assert to_torch.export_to_torch(head, "ecgfounder").state["dense.weight"].shape == (4, 64)
  with pytest.raises(to_torch.ExportToTorchError, match="head has 4 outputs"):
    to_torch.export_to_torch(head, "ecgfounder", num_labels=2)
  # A writer that drifts from the importer is caught before anything is written.
  broken = export_lib.Export(exp.directory, exp.config,
                             {**exp.params, "block_0": {**exp.params["block_0"],
                                                        "extra": {"w": np.ones(2)}}})
  with pytest.raises(to_torch.RoundTripError, match="only in the export"):
    to_torch.export_to_torch(broken, "st-mem")
  assert cli_main(["export", "--to", "st-mem", str(tmp_path / "nothing"),
                   str(tmp_path / "x.pth")]) == 2
  assert "is not an ecgjax export" in capsys.readouterr().err
  assert not (tmp_path / "x.pth").exists()
