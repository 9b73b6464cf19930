"""ECG-FM weight import: a tiny PyTorch ECG-FM (tests/interop_refs.py, from SPEC.md) in the
fairseq-signals checkpoint layout, converted and compared layer by layer and end to end; the
weight norm in its old, new and folded spellings; fine-tuned checkpoints; doctored keys."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="weight-import tests need torch (pip install 'ecgjax[torch]'; CI installs it)")

from ecgjax import interop, models  # noqa: E402
from ecgjax.interop import ecg_fm as ecg_fm_lib  # noqa: E402
from ecgjax.models import ecg_fm  # noqa: E402
from tests import interop_refs as refs  # noqa: E402
from tests.helpers import rel_err  # noqa: E402

TOL = 1e-5
# fairseq's checkpoint config: what the converter reads the head count from.
CFG = {"model": {"_name": "wav2vec2_cmsc", "encoder_attention_heads": 2, "encoder_layers": 2,
                 "encoder_embed_dim": 64, "layer_norm_first": False, "extractor_mode": "default",
                 "conv_feature_layers": "[(32, 2, 2)] * 4", "in_d": 12}}
POS = "conv_pos.pos_conv.0"


def _model(spelling: str = "parametrizations"):
  torch.manual_seed(0)  # the same weights for every spelling
  return refs.randomize(refs.ECGFM(spelling=spelling), seed=1)


def _checkpoint(state, cfg=CFG):
  return {"cfg": cfg, "model": state, "optimizer_history": [{"num_updates": 10}],
          "extra_state": {"epoch": 3}}


def _apply(conv, x, **kw):
  module = models.build_model(conv.encoder["module"], conv.encoder["variant"],
                              **conv.encoder["overrides"])
  return jax.jit(lambda p, x: module.apply({"params": p}, x, **kw))(conv.params, x)


@pytest.fixture(scope="module")
def ref():
  net = _model()
  x = np.random.default_rng(2).normal(size=(2, 12, 2500)).astype(np.float32)
  with torch.no_grad():
    emb_t, _ = net(torch.from_numpy(x))
  return net, x, emb_t.numpy(), interop.convert_state_dict(
      "ecg-fm", _checkpoint(refs.numpy_state(net)))


def test_every_layer_and_the_encoder_match_torch(ref):
  net, x, emb_t, conv = ref
  pairs = {"feature_extractor/conv_0": "feature_extractor.conv_layers.0.0",
           "feature_extractor/group_norm": "feature_extractor.conv_layers.0.2",
           "feature_extractor": "feature_extractor", "layer_norm": "layer_norm",
           "post_extract_proj": "post_extract_proj", "conv_pos": "conv_pos",
           "encoder_layer_norm": "encoder.layer_norm",
           "layers_0/self_attn": "encoder.layers.0.self_attn", "layers_0": "encoder.layers.0",
           "layers_1": "encoder.layers.1"}
  got_t = refs.capture(net, list(pairs.values()))
  with torch.no_grad():
    net(torch.from_numpy(x))
  (emb, _), state = _apply(conv, x, capture_intermediates=True)
  errors = refs.layer_errors(state["intermediates"], got_t, pairs,
                             channels_first=("feature_extractor",))
  errors["encoder embedding"] = rel_err(emb, emb_t)
  print("ecg-fm max rel err:", {k: f"{v:.1e}" for k, v in errors.items()})
  assert max(errors.values()) < TOL, errors


def test_variant_heads_and_contract(ref):
  *_, conv = ref
  rep = conv.report
  assert rep.ok and conv.encoder["variant"] == "mu" and conv.encoder["overrides"] == {
      "pooling": "feature_nonzero_mean"}
  assert conv.encoder["embedding"] == {"dim": 64, "pooling": conv.encoder["embedding"]["pooling"],
                                       "frames": 156}
  for key in ("mask_emb", "quantizer.vars", "quantizer.weight_proj.weight", "project_q.bias",
              "final_proj.weight"):
    assert "pretraining only" in rep.dropped[key]
  pp = conv.contract
  assert (pp.fs, pp.samples, pp.bandpass, pp.standardize, pp.resample_method) == (
      500.0, 2500, None, "per_lead", "linear")
  # The head count is not in the weights: it comes from the checkpoint's config.
  cfg = {"model": {**CFG["model"], "encoder_attention_heads": 4}}
  got = interop.convert_state_dict("ecg-fm", _checkpoint(refs.numpy_state(ref[0]), cfg))
  assert got.encoder["overrides"] == {"num_heads": 4, "pooling": "feature_nonzero_mean"}
  old_style = {"args": {"encoder_attention_heads": 4}, "model": refs.numpy_state(ref[0])}
  assert interop.convert_state_dict("ecg-fm", old_style).encoder["overrides"]["num_heads"] == 4


def test_weight_norm_folding_in_every_spelling(ref):
  *_, x, emb_t, _ = ref
  net = _model("parametrizations")
  conv_t = net.conv_pos.pos_conv[0]
  state = refs.numpy_state(net)
  g, v = state[f"{POS}.parametrizations.weight.original0"], state[
      f"{POS}.parametrizations.weight.original1"]
  assert g.shape == (1, 1, 16)  # one g per kernel tap (dim=2), norm over (out, in)
  w_t = conv_t.weight.detach().numpy()
  assert rel_err(ecg_fm_lib.fold_weight_norm(v, g), w_t) < 1e-6
  assert rel_err(ecg_fm.weight_norm(v, g), w_t) < 1e-6

  old = refs.numpy_state(_model("old"))
  assert f"{POS}.weight_g" in old and f"{POS}.weight_v" in old
  folded = {k: val for k, val in state.items() if ".parametrizations." not in k}
  folded[f"{POS}.weight"] = w_t
  for name, st in (("new", state), ("old", old), ("folded", folded)):
    conv = interop.convert_state_dict("ecg-fm", _checkpoint(st))
    err = rel_err(_apply(conv, x)[0], emb_t)
    print(f"ecg-fm weight norm, {name} spelling: encoder rel err {err:.1e}")
    assert conv.report.ok and err < TOL, name


def test_fine_tuned_checkpoint_strips_the_encoder_prefix(ref):
  net, x, emb_t, _ = ref
  tuned = {"encoder." + k: val for k, val in refs.numpy_state(net).items()
           if not k.startswith(("mask_emb", "quantizer", "project_q", "final_proj"))}
  tuned["proj.weight"], tuned["proj.bias"] = np.zeros((17, 64), np.float32), np.zeros(17)
  conv = interop.convert_state_dict("ecg-fm", _checkpoint(tuned))
  assert conv.report.dropped == {"proj.bias": "classification head of a fine-tuned model",
                                 "proj.weight": "classification head of a fine-tuned model"}
  assert rel_err(_apply(conv, x)[0], emb_t) < TOL
  del tuned["encoder.encoder.layers.1.fc2.bias"]
  with pytest.raises(interop.ConversionError, match="encoder.encoder.layers.1.fc2.bias"):
    interop.convert_state_dict("ecg-fm", tuned)


def test_doctored_state_dicts_and_configs_are_refused(ref):
  state = refs.numpy_state(ref[0])
  doctored = dict(state)
  del doctored[f"{POS}.parametrizations.weight.original0"]
  del doctored["encoder.layers.0.self_attn.k_proj.bias"]
  doctored["feature_extractor.conv_layers.0.0.bias"] = np.zeros(32, np.float32)
  doctored["encoder.layers.1.fc1.weight"] = np.zeros((64, 64), np.float32)
  with pytest.raises(interop.ConversionError) as err:
    interop.convert_state_dict("ecg-fm", _checkpoint(doctored))
  rep = err.value.report
  assert sorted(rep.missing) == ["conv_pos.pos_conv.0.parametrizations.weight.original0",
                                 "encoder.layers.0.self_attn.k_proj.bias"]
  assert rep.unexpected == ["feature_extractor.conv_layers.0.0.bias"]
  assert [m.split(":")[0] for m in rep.shape_mismatch] == ["encoder.layers.1.fc1.weight"]
  # The same key names can hide another architecture: the config says so, and that is refused.
  for change, msg in (({"layer_norm_first": True}, "pre-LN"),
                      ({"extractor_mode": "layer_norm"}, "extractor_mode"),
                      ({"conv_feature_layers": "[(32, 3, 2)] * 4"}, "kernel 2, stride 2")):
    cfg = {"model": {**CFG["model"], **change}}
    with pytest.raises(interop.ConversionError, match=msg):
      interop.convert_state_dict("ecg-fm", _checkpoint(state, cfg))
