"""ECGFounder (Net1D) weight import: a tiny PyTorch Net1D (tests/interop_refs.py, from SPEC.md)
in ECGFounder's {'state_dict': ...} layout with its unused BatchNorm entries, converted and
compared layer by layer and end to end; 1-lead models; doctored state dicts."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch", reason="weight-import tests need torch (pip install 'ecgjax[torch]'; CI installs it)")

from ecgjax import interop, models  # noqa: E402
from tests import interop_refs as refs  # noqa: E402
from tests.helpers import rel_err  # noqa: E402

TOL = 1e-5
N = 1000  # samples: short enough to be quick, long enough for odd lengths (1000 -> 500 .. 32)


def _convert(net, leads=12, **kw):
  """(converted, Flax module, input) for a torch Net1D saved as ECGFounder does."""
  conv = interop.convert_state_dict("ecgfounder", {"state_dict": refs.numpy_state(net)}, **kw)
  module = models.build_model(conv.encoder["module"], conv.encoder["variant"],
                              **conv.encoder["overrides"])
  x = np.random.default_rng(leads).normal(size=(2, leads, N)).astype(np.float32)
  return conv, module, x


@pytest.fixture(scope="module")
def ref():
  torch.manual_seed(0)
  net = refs.randomize(refs.Net1D(), seed=1)
  return (net, *_convert(net))


def test_every_layer_and_the_encoder_match_torch(ref):
  net, conv, module, x = ref
  pairs = {"stem": "first_conv", "stage0_block0": "stage_list.0.block_list.0",
           "stage0_block0/conv2": "stage_list.0.block_list.0.conv2",
           "stage0_block0/se_fc1": "stage_list.0.block_list.0.se_fc1",
           "stage1_block0": "stage_list.1.block_list.0",  # stride 2 + channel padding
           "stage1_block1": "stage_list.1.block_list.1",
           "stage3_block1": "stage_list.3.block_list.1"}
  got_t = refs.capture(net, list(pairs.values()))
  with torch.no_grad():
    _, feat_t = net(torch.from_numpy(x))
  (feat, _), state = jax.jit(lambda p, x: module.apply({"params": p}, x,
                                                       capture_intermediates=True))(conv.params, x)
  errors = refs.layer_errors(state["intermediates"], got_t, pairs,
                             channels_first=("stem", "stage"))
  errors["encoder features"] = rel_err(feat, feat_t.numpy())
  print("ecgfounder max rel err:", {k: f"{v:.1e}" for k, v in errors.items()})
  assert max(errors.values()) < TOL, errors


def test_report_drops_bn_and_classifier_by_name(ref):
  _, conv, _, _ = ref
  rep = conv.report
  assert rep.ok and conv.encoder["variant"] == "mu" and conv.encoder["overrides"] == {
      "num_classes": 0}
  why = rep.dropped
  assert why["dense.weight"].startswith("ECGFounder's classifier")
  n_blocks = 8
  bn = [k for k, w in why.items() if w.startswith("BatchNorm")]
  assert len(bn) == 5 * (1 + 3 * n_blocks)  # weight, bias, running stats, num_batches_tracked
  assert "stage_list.0.block_list.0.bn1.running_var" in bn
  assert conv.encoder["embedding"]["dim"] == 64
  pp = conv.contract
  assert (pp.fs, pp.samples, pp.notch, pp.bandpass, pp.filter_order, pp.baseline_window_s,
          pp.standardize) == (500.0, 5000, 50.0, (0.67, 40.0), 4, 0.4, "global")


def test_one_lead_model_takes_lead_i():
  torch.manual_seed(0)
  net = refs.randomize(refs.Net1D(leads=1), seed=2)
  conv, module, x = _convert(net, leads=1)
  assert conv.contract.leads == ("I",) and any("lead I" in n for n in conv.report.notes)
  with torch.no_grad():
    _, feat_t = net(torch.from_numpy(x))
  feat, _ = jax.jit(module.apply)({"params": conv.params}, x)
  assert rel_err(feat, feat_t.numpy()) < TOL
  assert interop.convert_state_dict("ecgfounder", refs.numpy_state(net),
                                    leads=["II"]).contract.leads == ("II",)


def test_doctored_state_dicts_are_reported(ref):
  net = ref[0]
  state = refs.numpy_state(net)
  doctored = dict(state)
  del doctored["stage_list.2.block_list.1.conv2.conv.weight"]
  doctored["stage_list.0.block_list.0.se_fc2.bias"] = np.zeros(3, np.float32)
  doctored["stage_list.0.block_list.0.attn.weight"] = np.zeros(3, np.float32)
  with pytest.raises(interop.ConversionError) as err:
    interop.convert_state_dict("ecgfounder", {"state_dict": doctored})
  rep = err.value.report
  assert rep.missing == ["stage_list.2.block_list.1.conv2.conv.weight"]
  assert rep.unexpected == ["stage_list.0.block_list.0.attn.weight"]
  assert rep.shape_mismatch == ["stage_list.0.block_list.0.se_fc2.bias: checkpoint (3,) -> "
                                "stage0_block0/se_fc2/bias (16,) in the model"]
  # A whole block missing at the end of a stage is missing, not a smaller network.
  short = {k: v for k, v in state.items() if not k.startswith("stage_list.3.block_list.1.")}
  with pytest.raises(interop.ConversionError, match="stage3_block1/conv1/conv/kernel"):
    interop.convert_state_dict("ecgfounder", short, variant="mu", ignore_keys=["^dense"])
