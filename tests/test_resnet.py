"""ResNet1D / ResNet2D (EIANet): shapes, parameter counts, spatial attention, BN train vs eval."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models import build_model, resnet
from tests.helpers import n_params


def _apply(model):
  """Jitted model.apply (op-by-op dispatch of un-jitted convs costs seconds per call)."""
  return jax.jit(model.apply, static_argnames=("train", "mutable"))


def abstract_params(model, shape):
  return jax.eval_shape(model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct(shape, jnp.float32))["params"]


@pytest.mark.parametrize("block", ["basic", "bottleneck"])
def test_resnet1d_mu_shapes(block):
  model = build_model("resnet1d", "mu", block=block, num_classes=4)
  x = jax.random.normal(jax.random.key(0), (2, 12, 500))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  logits, aux = _apply(model)(variables, x)
  width = 8 * 8 * (4 if block == "bottleneck" else 1)
  assert logits.shape == (2, 4) and aux["features"].shape == (2, width)
  assert np.isfinite(np.asarray(logits)).all()


def test_resnet2d_mu_shapes_and_attention():
  model = build_model("resnet2d", "mu", num_classes=3)
  x = jax.random.normal(jax.random.key(0), (2, 64, 48, 1))
  variables = jax.jit(model.init)(jax.random.key(1), x)
  logits, aux = _apply(model)(variables, x)
  assert logits.shape == (2, 3) and aux["features"].shape == (2, 8 * 8 * 4)
  # One 1-channel map per stage, at the stage's resolution (stem /4, then /2 per later stage).
  assert [a.shape for a in aux["attention"]] == [(2, 16, 12, 1), (2, 8, 6, 1), (2, 4, 3, 1),
                                                 (2, 2, 2, 1)]
  assert variables["params"]["body"]["attention0"]["conv"]["kernel"].shape == (7, 7, 2, 1)


def test_spatial_attention_multiplies_by_map_in_unit_interval():
  gate = resnet.SpatialAttention()
  x = jax.random.normal(jax.random.key(0), (2, 9, 11, 5)) * 3
  variables = jax.jit(gate.init)(jax.random.key(1), x)
  y, a = jax.jit(gate.apply)(variables, x)
  assert a.shape == (2, 9, 11, 1) and y.shape == x.shape
  assert float(a.min()) > 0 and float(a.max()) < 1
  np.testing.assert_allclose(y, x * a, rtol=1e-6)
  # The map comes from [channel mean, channel max] only: permuting channels leaves it unchanged.
  _, a_perm = jax.jit(gate.apply)(variables, x[..., ::-1])
  np.testing.assert_allclose(a_perm, a, rtol=1e-5, atol=1e-6)


def test_resnet2d50_plain_matches_torchvision_param_count():
  # torchvision resnet50(num_classes=1000) has 25,557,032 parameters: proves the topology.
  params = abstract_params(build_model("resnet2d", "resnet2d50", num_classes=1000),
                           (1, 224, 224, 3))
  assert n_params(params) == 25_557_032


def test_resnet2d50_sa_param_count():
  # Four bias-free 7x7 convs 2 -> 1 on top: +4 * 98.
  params = abstract_params(build_model("resnet2d", "resnet2d50_sa", num_classes=1000),
                           (1, 224, 224, 3))
  assert n_params(params) == 25_557_032 + 4 * 98
  params = abstract_params(build_model("resnet2d", "resnet2d50_sa"), (1, 224, 224, 3))
  assert n_params(params) == 23_510_473  # EIANet: one binary logit


@pytest.mark.parametrize("variant,expected", [("resnet1d18", 8_737_921),
                                              ("resnet1d34", 16_601_473),
                                              ("resnet1d50", 20_997_249)])
def test_resnet1d_param_counts(variant, expected):
  # 12 leads, 1 logit; stem k=15, block kernel 7 (see the module docstring).
  params = abstract_params(build_model("resnet1d", variant), (1, 12, 5000))
  assert n_params(params) == expected


def test_resnet1d50_output_shape_abstract():
  model = build_model("resnet1d", "resnet1d50", num_classes=5)
  x = jax.ShapeDtypeStruct((2, 12, 5000), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, aux = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2, 5) and aux["features"].shape == (2, 2048)


def test_unknown_variant():
  with pytest.raises(ValueError, match="resnet1d50"):
    build_model("resnet1d", "resnet2d50")


@pytest.mark.parametrize("name,shape", [("resnet1d", (4, 12, 256)), ("resnet2d", (4, 32, 32, 3))])
def test_batchnorm_train_vs_eval(name, shape):
  model = build_model(name, "mu", num_classes=2)
  x = jax.random.normal(jax.random.key(0), shape) * 2 + 1
  variables = jax.jit(model.init)(jax.random.key(1), x)
  # Train: batch statistics are used and the running averages move (momentum 0.9, like torch 0.1).
  (out_train, _), updates = _apply(model)(variables, x, train=True, mutable=("batch_stats",))
  old = variables["batch_stats"]["body"]["stem_bn"]["mean"]
  new = updates["batch_stats"]["body"]["stem_bn"]["mean"]
  assert not np.allclose(new, old)
  # Eval: running statistics only, so an example's output does not depend on its batch-mates.
  out_all, _ = _apply(model)(variables, x)
  out_one, _ = _apply(model)(variables, x[:1])
  np.testing.assert_allclose(out_one, out_all[:1], rtol=1e-5, atol=1e-6)
  # Train mode does depend on the batch.
  (out_two_train, _), _ = _apply(model)(variables, x[:2], train=True,
                                        mutable=("batch_stats",))
  assert not np.allclose(out_two_train, out_train[:2], atol=1e-6)
  # Training without a mutable batch_stats collection is an error, not a silent no-op.
  with pytest.raises(Exception, match="batch_stats"):
    _apply(model)(variables, x, train=True)
