"""models.linear: Dense and GroupedConv1D have nn.Dense's / nn.Conv's parameters and float32
forward bit for bit; in bfloat16 Dense sums products in float32 forward and backward (the AMX
path on XLA:CPU), and the grouped convolution's kernel gradient is computed tap by tap on a
CPU; gradients equal autodiff's."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.models import layers


def _inputs(dtype=jnp.float32):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 48), dtype)
  return x


def test_float32_is_flax_dense_bit_for_bit():
  x = _inputs()
  ref = nn.Dense(24, kernel_init=layers.dense_kernel_init, bias_init=nn.initializers.normal(1.0))
  ours = layers.Dense(24, bias_init=nn.initializers.normal(1.0))
  params = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == \
      jax.tree.map(jnp.shape, params)
  np.testing.assert_array_equal(ours.apply(params, x), ref.apply(params, x))
  g_ref = jax.grad(lambda p: jnp.sum(ref.apply(p, x) ** 2))(params)
  g = jax.grad(lambda p: jnp.sum(ours.apply(p, x) ** 2))(params)
  jax.tree.map(np.testing.assert_array_equal, g, g_ref)


def test_unnamed_dense_keeps_flax_auto_name():
  class Two(nn.Module):
    @nn.compact
    def __call__(self, x):
      return layers.Dense(3)(layers.Dense(4)(x))
  params = Two().init(jax.random.PRNGKey(0), jnp.ones((1, 5)))["params"]
  assert sorted(params) == ["Dense_0", "Dense_1"]


def test_bfloat16_forward_and_gradients_match_float32_math():
  x = _inputs().astype(jnp.bfloat16)
  layer = layers.Dense(24, dtype=jnp.bfloat16, bias_init=nn.initializers.normal(1.0))
  params = layer.init(jax.random.PRNGKey(1), x)
  p = params["params"]
  kb = p["kernel"].astype(jnp.bfloat16).astype(jnp.float32)
  xf = x.astype(jnp.float32)
  y = layer.apply(params, x)
  assert y.dtype == jnp.bfloat16
  # the float32 sum of the bf16 products, plus the float32 bias, rounded once to bf16
  want = (jnp.einsum("btk,kn->btn", xf, kb, precision="highest") + p["bias"])
  np.testing.assert_array_equal(y, want.astype(jnp.bfloat16))

  w = jax.random.normal(jax.random.PRNGKey(2), y.shape)
  loss = lambda p, x: jnp.sum(layer.apply(p, x).astype(jnp.float32) * w)
  gp, gx = jax.grad(loss, argnums=(0, 1))(params, x)
  gp = gp["params"]
  # parameters get float32 gradients (no bf16 rounding of the weight gradient)
  assert gp["kernel"].dtype == jnp.float32 and gp["bias"].dtype == jnp.float32
  assert gx.dtype == jnp.bfloat16
  wb = w.astype(jnp.bfloat16).astype(jnp.float32)  # the incoming gradient, in bf16
  np.testing.assert_allclose(gp["bias"], wb.sum((0, 1)), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(gp["kernel"], jnp.einsum("btk,btn->kn", xf, wb, precision="highest"),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(
      gx.astype(jnp.float32),
      jnp.einsum("btn,kn->btk", wb, kb, precision="highest").astype(jnp.bfloat16)
      .astype(jnp.float32), rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_step_has_no_low_precision_dot(dtype):
  """Every dot of a low-precision Dense's forward and backward asks for a float32 result:
  the property that puts them on XLA:CPU's matrix-unit path (bench/pretrain_step.py)."""
  x = _inputs().astype(dtype)
  layer = layers.Dense(24, dtype=dtype)
  params = layer.init(jax.random.PRNGKey(1), x)
  step = jax.jit(jax.grad(lambda p, x: jnp.sum(layer.apply(p, x).astype(jnp.float32) ** 2),
                          argnums=(0, 1)))
  hlo = step.lower(params, x).as_text()
  dots = re.findall(r"stablehlo\.dot_general.*?-> tensor<([^>]*)>", hlo)
  assert len(dots) == 3  # forward, input gradient, kernel gradient
  assert all(d.endswith("f32") for d in dots), dots


def test_gpu_lowering_keeps_low_precision_results():
  """On GPUs the forward and input-gradient dots keep bf16 results (the kernel sums in
  float32 itself); the kernel gradient is float32 everywhere. Lowered for CUDA without one."""
  x = _inputs().astype(jnp.bfloat16)
  layer = layers.Dense(24, dtype=jnp.bfloat16)
  params = layer.init(jax.random.PRNGKey(1), x)
  step = jax.jit(jax.grad(lambda p, x: jnp.sum(layer.apply(p, x).astype(jnp.float32) ** 2),
                          argnums=(0, 1)))
  hlo = jax.export.export(step, platforms=["cuda"])(params, x).mlir_module()
  dots = sorted(re.findall(r"stablehlo\.dot_general.*?-> tensor<([^>]*)>", hlo))
  assert dots == ["2x7x24xbf16", "2x7x48xbf16", "48x24xf32"], dots


@pytest.mark.parametrize("groups, stride, kernel, length", [(1, 1, 3, 20), (4, 2, 16, 41),
                                                             (8, 1, 16, 30), (16, 2, 5, 33),
                                                             (16, 3, 7, 29)])
def test_grouped_conv_is_nn_conv_and_its_gradients(groups, stride, kernel, length):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, length, 32))
  pad = (kernel // 2 - 1 + kernel % 2, kernel // 2)
  ref = nn.Conv(48, (kernel,), strides=(stride,), padding=[pad], feature_group_count=groups,
                bias_init=nn.initializers.normal(1.0))
  ours = layers.GroupedConv1D(48, kernel, stride, pad, groups)
  params = ref.init(jax.random.PRNGKey(1), x)
  assert jax.tree.map(jnp.shape, ours.init(jax.random.PRNGKey(1), x)) == \
      jax.tree.map(jnp.shape, params)
  y = ours.apply(params, x)
  np.testing.assert_array_equal(y, ref.apply(params, x))
  w = jax.random.normal(jax.random.PRNGKey(2), y.shape)
  g_ref = jax.grad(lambda p, x: jnp.sum(ref.apply(p, x) * w), (0, 1))(params, x)
  grad = jax.jit(jax.grad(lambda p, x: jnp.sum(ours.apply(p, x) * w), (0, 1)))
  # the kernel gradient by taps (a scan) from 8 groups up, XLA's own below
  assert ("stablehlo.while" in grad.lower(params, x).as_text()) == (groups >= 8)
  g = grad(params, x)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5 * float(jnp.abs(b).max()))
  # bf16 compute: float32 kernel gradient, near float32 autodiff's
  low = layers.GroupedConv1D(48, kernel, stride, pad, groups, dtype=jnp.bfloat16)
  gk = jax.jit(jax.grad(lambda p: jnp.sum(low.apply(p, x).astype(jnp.float32) * w)))(params)
  assert gk["params"]["kernel"].dtype == jnp.float32
  ref_k = g_ref[0]["params"]["kernel"]
  assert float(jnp.abs(gk["params"]["kernel"] - ref_k).max() / jnp.abs(ref_k).max()) < 3e-2


def test_kernel_gradient_by_taps_by_hand():
  # one group, one channel in and out, kernel 2, stride 2: dW[k] = sum_t x[2t + k] g[t]
  x = jnp.arange(1.0, 7.0).reshape(1, 6, 1)
  g = jnp.asarray([1.0, 10.0, 100.0]).reshape(1, 3, 1)
  dw = layers.grouped_conv_kernel_grad(x, g, 2, 2, (0, 0), 1)
  np.testing.assert_array_equal(dw.reshape(2), [1 + 30 + 500, 2 + 40 + 600])
