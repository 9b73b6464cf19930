"""Net1D: golden exactness against the official PyTorch outputs, sizes, padding, import reports."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.interop import net1d as interop
from ecgjax.models import build_model, net1d
from tests.helpers import n_params, rel_err

TOL = 1e-5


def _apply(model):
  """Jitted model.apply (op-by-op dispatch of un-jitted convs costs seconds per call)."""
  return jax.jit(model.apply, static_argnames=("train", "mutable"))


def abstract_variables(model: nn.Module, seq_len: int, leads: int = 12):
  """Variables of ShapeDtypeStructs: sizes without materialising weights."""
  return jax.eval_shape(model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, leads, seq_len), jnp.float32))


def load_golden(shared_dir, tag: str) -> tuple[dict, dict[str, np.ndarray]]:
  """(arrays, official state dict) of golden/net1d_tiny_{tag}.npz."""
  z = np.load(shared_dir / "golden" / f"net1d_tiny_{tag}.npz")
  arrays = {k: z[k] for k in z.files}
  state = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
  return arrays, state


@pytest.mark.parametrize("tag,use_bn", [("bn", True), ("nobn", False)])
def test_golden_exactness(shared_dir, tag, use_bn):
  arrays, state = load_golden(shared_dir, tag)
  model = build_model("net1d", "mu", use_bn=use_bn)
  template = abstract_variables(model, arrays["input"].shape[-1])
  # ECGFounder's checkpoints nest the weights under 'state_dict'.
  variables = interop.params_from_torch_state_dict(
      {"state_dict": state}, use_bn=use_bn, template=template, ignore_unused_bn=True)
  logits, aux = jax.jit(model.apply)(variables, arrays["input"])
  e_logits, e_feat = rel_err(logits, arrays["logits"]), rel_err(aux["features"], arrays["features"])
  print(f"net1d golden {tag}: logits rel err {e_logits:.2e}, features rel err {e_feat:.2e}")
  assert e_logits < TOL and e_feat < TOL


def test_unused_bn_is_reported_not_silent(shared_dir):
  _, state = load_golden(shared_dir, "nobn")
  with pytest.raises(ValueError, match="first_bn.weight"):
    interop.params_from_torch_state_dict(state, use_bn=False)
  _, missing, unused_bn, unexpected = interop.map_state_dict(state, use_bn=False)
  assert not missing and not unexpected
  n_blocks = 8
  assert len(unused_bn) == 5 * (1 + 3 * n_blocks)  # 5 entries per BN, incl. num_batches_tracked
  # With BN on, only the never-applied bn1 of the very first block is left over.
  _, _, unused_bn, _ = interop.map_state_dict(state, use_bn=True)
  assert sorted(unused_bn) == sorted(f"stage_list.0.block_list.0.bn1.{leaf}"
                                     for leaf in interop._BN_LEAVES)


def test_missing_unexpected_and_shape_mismatch_raise(shared_dir):
  _, state = load_golden(shared_dir, "bn")
  broken = dict(state)
  del broken["stage_list.1.block_list.0.conv2.conv.weight"]
  broken["extra.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError) as err:
    interop.params_from_torch_state_dict(broken, use_bn=True, ignore_unused_bn=True)
  assert "stage_list.1.block_list.0.conv2.conv.weight" in str(err.value)
  assert "extra.weight" in str(err.value)
  model = build_model("net1d", "mu", use_bn=True, num_classes=7)  # head shape differs
  with pytest.raises(ValueError, match="head/kernel"):
    interop.params_from_torch_state_dict(state, use_bn=True, ignore_unused_bn=True,
                                         template=abstract_variables(model, 1000))


def test_ecgfounder_length_trace():
  model = build_model("net1d", "ecgfounder")
  x = jax.ShapeDtypeStruct((2, 12, 5000), jnp.float32)
  variables = abstract_variables(model, 5000)
  (logits, aux), state = jax.eval_shape(
      lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x)
  inter = state["intermediates"]
  lengths = [inter["stem_out"][0].shape[1]]
  lengths += [inter[f"stage{s}_out"][0].shape[1] for s in range(7)]
  assert lengths == [2500, 1250, 625, 313, 157, 79, 40, 20]
  assert lengths == net1d.length_trace(5000, 7)
  assert logits.shape == (2, 150) and aux["features"].shape == (2, 1024)


@pytest.mark.parametrize("use_bn,expected", [(False, 30_752_646), (True, 30_818_886)])
def test_ecgfounder_param_count(use_bn, expected):
  # The reference creates 30,819,014 (unapplied BN affines too); we create only what is used.
  variables = abstract_variables(build_model("net1d", "ecgfounder", use_bn=use_bn), 5000)
  assert n_params(variables["params"]) == expected
  assert ("batch_stats" in variables) == use_bn


def test_same_padding_split():
  assert net1d.same_padding(5, 16, 2) == (7, 8)  # total 15: extra element on the right
  assert net1d.same_padding(5000, 16, 2) == (7, 7)
  assert net1d.same_padding(1000, 1, 1) == (0, 0)
  assert net1d.same_padding(7, 2, 2) == (0, 1)
  assert net1d.same_padding(3, 1, 4) == (0, 0)  # never negative


def test_max_pool_pads_with_zero_not_minus_inf():
  x = -jnp.arange(1.0, 6.0).reshape(1, 5, 1)  # odd length, all negative
  out = net1d.max_pool_zero_same(x, 2)
  np.testing.assert_array_equal(np.asarray(out)[0, :, 0], [-1.0, -3.0, 0.0])


def test_channel_padding_split():
  x = jnp.ones((1, 2, 3))
  out = np.asarray(net1d.pad_channels(x, 8))[0, 0]
  np.testing.assert_array_equal(out, [0, 0, 1, 1, 1, 0, 0, 0])  # 5 extra: 2 before, 3 after


def test_train_mode_dropout_and_bn_updates():
  model = build_model("net1d", "mu", use_bn=True, use_dropout=True)
  x = jax.random.normal(jax.random.key(1), (4, 12, 256))
  variables = jax.jit(model.init)(jax.random.key(0), x)
  (a, _), upd = _apply(model)(variables, x, train=True, mutable=("batch_stats",),
                            rngs={"dropout": jax.random.key(2)})
  (b, _), _ = _apply(model)(variables, x, train=True, mutable=("batch_stats",),
                          rngs={"dropout": jax.random.key(3)})
  assert not np.allclose(a, b)  # dropout active
  old = variables["batch_stats"]["stem_bn"]["mean"]
  assert not np.allclose(upd["batch_stats"]["stem_bn"]["mean"], old)
  e1, _ = _apply(model)(variables, x)  # eval: deterministic, no rng needed
  e2, _ = _apply(model)(variables, x)
  np.testing.assert_array_equal(e1, e2)
