"""ST-MEM weight import: a tiny PyTorch ST-MEM (tests/interop_refs.py, from SPEC.md) converted,
compared layer by layer and end to end; encoder.pth, full-model and fine-tuned key layouts;
the missing / unexpected / shape report on doctored state dicts."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="weight-import tests need torch (pip install 'ecgjax[torch]'; CI installs it)")

from ecgjax import interop, models  # noqa: E402
from tests import interop_refs as refs  # noqa: E402
from tests.helpers import rel_err  # noqa: E402

TOL = 1e-5
# The registry's "mu" size: width 64, depth 1, 1 head x 64, MLP 256 (+ a second block here).
SIZE = dict(width=64, depth=2, heads=1, mlp=256)


@pytest.fixture(scope="module")
def ref():
  """(torch encoder, its state dict, input, converted params, Flax encoder)."""
  torch.manual_seed(0)
  enc = refs.randomize(refs.STMEMEncoder(**SIZE), seed=1)
  state = refs.numpy_state(enc)
  x = np.random.default_rng(2).normal(size=(2, 12, 2250)).astype(np.float32)
  conv = interop.convert_state_dict("st-mem", state)
  module = models.build_model(conv.encoder["module"], conv.encoder["variant"],
                              **conv.encoder["overrides"])
  return enc, state, x, conv, module


def test_every_layer_and_the_encoder_match_torch(ref):
  enc, _, x, conv, module = ref
  pairs = {  # Flax submodule -> the torch module with the published key name
      "patch_in_norm": "to_patch_embedding.1", "patch_embed": "to_patch_embedding.2",
      "patch_out_norm": "to_patch_embedding.3", "block_0/attn": "block0.attn.fn",
      "block_0/mlp": "block0.ff.fn", "block_0": "block0", "block_1": "block1", "norm": "norm"}
  got_t = refs.capture(enc, list(pairs.values()))
  with torch.no_grad():
    emb_t, _ = enc(torch.from_numpy(x))
  (emb, _), state = jax.jit(lambda p, x: module.apply({"params": p}, x,
                                                      capture_intermediates=True))(conv.params, x)
  errors = refs.layer_errors(state["intermediates"], got_t, pairs)
  errors["encoder embedding"] = rel_err(emb, emb_t.numpy())
  print("st-mem max rel err:", {k: f"{v:.1e}" for k, v in errors.items()})
  assert max(errors.values()) < TOL, errors


def test_variant_and_contract_read_off_the_checkpoint(ref):
  _, _, _, conv, _ = ref
  assert conv.encoder["model"] == "st_mem" and conv.encoder["module"] == "st_mem_encoder"
  assert conv.encoder["variant"] == "mu" and conv.encoder["overrides"] == {"depth": 2}
  assert conv.encoder["embedding"]["dim"] == 64
  pp = conv.contract
  assert (pp.fs, pp.samples, pp.bandpass, pp.filter_order, pp.standardize) == (
      250.0, 2250, (0.67, 40.0), 5, "global")
  assert len(pp.leads) == 12 and conv.report.ok and not conv.report.dropped


def test_full_model_and_fine_tuned_layouts_give_the_encoder(ref):
  enc, state, _, conv, _ = ref
  full = refs.st_mem_full_state(enc, seed=3)
  got = interop.convert_state_dict("st-mem", {"model": full, "epoch": 800})
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(conv.params)):
    np.testing.assert_array_equal(a, b)
  why = got.report.dropped
  assert why["decoder_blocks.0.attn.fn.to_qkv.weight"].startswith("MAE decoder")
  assert "saved twice" in why["to_patch_embedding.2.weight"]
  assert "mask_embedding" in why and "decoder_head.bias" in why
  tuned = {**state, "head.weight": np.zeros((5, 64), np.float32),
           "head.bias": np.zeros(5, np.float32)}
  got = interop.convert_state_dict("st-mem", {"module." + k: v for k, v in tuned.items()})
  assert "classification head" in got.report.dropped["head.weight"]
  # The two copies of the patch embedding must agree: they are one module in the reference.
  bad = dict(full)
  bad["to_patch_embedding.2.bias"] = bad["to_patch_embedding.2.bias"] + 1
  with pytest.raises(ValueError, match="differs from encoder.to_patch_embedding.2.bias"):
    interop.convert_state_dict("st-mem", bad)


def test_missing_unexpected_and_shape_mismatch_are_all_listed(ref):
  _, state, _, _, _ = ref
  doctored = dict(state)
  del doctored["block1.attn.fn.to_qkv.weight"]
  del doctored["lead_embeddings.7"]
  doctored["block0.ff.fn.net.3.weight"] = doctored["block0.ff.fn.net.3.weight"][:, :128]
  doctored["block0.attn.fn.to_kv.weight"] = np.zeros((4, 4), np.float32)
  with pytest.raises(interop.ConversionError) as err:
    interop.convert_state_dict("st-mem", doctored)
  rep = err.value.report
  assert sorted(rep.missing) == ["block1.attn.fn.to_qkv.weight", "lead_embeddings.7"]
  assert rep.unexpected == ["block0.attn.fn.to_kv.weight"]
  assert len(rep.shape_mismatch) == 1
  assert rep.shape_mismatch[0].startswith("block0.ff.fn.net.3.weight: checkpoint (128, 64)")
  text = str(err.value)
  for key in ("block1.attn.fn.to_qkv.weight", "lead_embeddings.7", "block0.attn.fn.to_kv.weight",
              "block0.ff.fn.net.3.weight", "conversion FAILED"):
    assert key in text
  # A --variant that disagrees with the weights is refused, not half-loaded.
  with pytest.raises(interop.ConversionError, match="depth=2, --variant mu has 1"):
    interop.convert_state_dict("st-mem", state, variant="mu")


def test_allow_missing_keeps_named_parameters_at_init_and_says_so(ref):
  _, state, _, conv, _ = ref
  doctored = {k: v for k, v in state.items() if not k.startswith("block1.ff.norm.")}
  with pytest.raises(interop.ConversionError, match="block1.ff.norm.weight"):
    interop.convert_state_dict("st-mem", doctored)
  with pytest.raises(interop.ConversionError, match="block1.ff.norm.bias"):
    interop.convert_state_dict("st-mem", doctored, allow_missing=[r"ff\.norm\.weight"])
  got = interop.convert_state_dict("st-mem", doctored, allow_missing=[r"^block1\.ff\.norm\."])
  assert got.report.ok and got.report.allowed_missing == ["block1.ff.norm.weight",
                                                           "block1.ff.norm.bias"]
  assert "RANDOM INIT" in got.report.summary()
  np.testing.assert_array_equal(got.params["block_1"]["mlp_norm"]["scale"], np.ones(64))
  np.testing.assert_array_equal(got.params["block_0"]["attn"]["qkv"]["kernel"],
                                conv.params["block_0"]["attn"]["qkv"]["kernel"])
