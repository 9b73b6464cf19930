"""The memory-lean backward passes (layers.gelu, layers.LayerNorm, the XLA attention) and
the host-memory helpers: same forward as before bit for bit, same gradients to rounding."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import lazy
from ecgjax.models import layers
from ecgjax.train import host_memory


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-30))


def test_gelu_matches_exact_gelu_and_its_gradient():
  x = jnp.linspace(-8.0, 8.0, 2001, dtype=jnp.float32)
  np.testing.assert_array_equal(layers.gelu(x), nn.gelu(x, approximate=False))
  g_ref = jax.vmap(jax.grad(lambda t: nn.gelu(t, approximate=False)))(x)
  g = jax.vmap(jax.grad(layers.gelu))(x)
  assert float(jnp.abs(g - g_ref).max()) < 5e-7
  # by hand at 0 and 1: Phi(0) = 0.5; Phi(1) + phi(1) = 0.841345 + 0.241971
  assert float(jax.grad(layers.gelu)(0.0)) == pytest.approx(0.5, abs=1e-7)
  assert float(jax.grad(layers.gelu)(1.0)) == pytest.approx(1.0833155, abs=1e-6)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_layer_norm_is_flax_forward_bit_for_bit_and_gradient(dtype):
  x = (jax.random.normal(jax.random.PRNGKey(0), (3, 5, 48)) * 4 + 7).astype(dtype)
  ref = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype,
                     param_dtype=jnp.float32)
  ours = layers.LayerNorm(dtype=dtype)
  params = ref.init(jax.random.PRNGKey(1), x)
  params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.PRNGKey(2), p.shape), params)
  assert jax.tree.structure(ours.init(jax.random.PRNGKey(1), x)) == jax.tree.structure(params)
  y_ref, y = ref.apply(params, x), ours.apply(params, x)
  assert y.dtype == y_ref.dtype == dtype
  np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(y_ref, np.float32))
  w = jax.random.normal(jax.random.PRNGKey(3), x.shape)
  loss = lambda m: lambda p, t: (m.apply(p, t).astype(jnp.float32) * w).sum()
  g_ref = jax.grad(loss(ref), (0, 1))(params, x)
  g = jax.grad(loss(ours), (0, 1))(params, x)
  tol = 1e-6 if dtype == jnp.float32 else 2e-2
  for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g)):
    assert _rel(a, b) < tol


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_attention_backward_recomputes_the_same_gradient(dtype):
  ks = jax.random.split(jax.random.PRNGKey(0), 4)
  q, k, v = (jax.random.normal(kk, (2, 11, 3, 16)).astype(dtype) for kk in ks[:3])
  w = jax.random.normal(ks[3], (2, 11, 3, 16))
  ref = lambda *a: (jax.nn.dot_product_attention(*a, scale=1.0).astype(jnp.float32) * w).sum()
  ours = lambda *a: (layers.attend(*a).astype(jnp.float32) * w).sum()
  np.testing.assert_array_equal(np.asarray(layers.attend(q, k, v), np.float32),
                                np.asarray(jax.nn.dot_product_attention(q, k, v, scale=1.0),
                                           np.float32))
  tol = 1e-6 if dtype == jnp.float32 else 2e-2
  for a, b in zip(jax.grad(ref, (0, 1, 2))(q, k, v), jax.grad(ours, (0, 1, 2))(q, k, v)):
    assert _rel(a, b) < tol


def test_lean_backward_keeps_fewer_buffers():
  """A deep stack of pre-LN blocks (activations held across layers, as in a ViT) needs less
  scratch with the lean backward passes than with autodiff of Flax's LayerNorm and GELU."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 64, 128))

  class Stack(nn.Module):
    lean: bool

    @nn.compact
    def __call__(self, t):
      for _ in range(6):
        if self.lean:
          h = layers.gelu(nn.Dense(512)(layers.LayerNorm()(t)))
        else:
          h = nn.LayerNorm(epsilon=1e-5, use_fast_variance=False)(t)
          h = nn.gelu(nn.Dense(512)(h), approximate=False)
        t = t + nn.Dense(128)(h)
      return (t * t).sum()

  def temp_bytes(m):
    p = m.init(jax.random.PRNGKey(1), x)
    f = jax.jit(jax.grad(lambda p, t: m.apply(p, t), argnums=(0, 1)))
    return f.lower(p, x).compile().memory_analysis().temp_size_in_bytes

  lean, plain = temp_bytes(Stack(True)), temp_bytes(Stack(False))
  assert lean < 0.85 * plain, (lean, plain)


def test_host_memory_helpers_run_and_report():
  assert host_memory.release_free_memory() in (True, False)
  rss = host_memory.rss_mib()
  assert rss is None or rss > 10
  if sys.platform.startswith("linux"):
    assert host_memory.release_free_memory() is True


def test_lazy_module_imports_on_first_use():
  m = lazy.LazyModule("colorsys")
  assert m.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
  with pytest.raises(AttributeError):
    m.__wrapped__  # pylint: disable=pointless-statement


def test_trainer_imports_no_scipy_signal_nor_sklearn():
  code = ("import sys, ecgjax.data, ecgjax.objectives, ecgjax.train.loop, ecgjax.apps.pretrain;"
          "print(sorted(m for m in ('sklearn', 'scipy.signal', 'scipy.stats') "
          "if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       check=True, timeout=120)
  assert out.stdout.strip() == "[]", out.stdout + out.stderr


def _oiw_conv(x, w, pad, groups):
  """ECG-FM's positional convolution as written before: torch's (out, in/groups, taps)
  kernel, XLA's autodiff."""
  return jax.lax.conv_general_dilated(x, w, (1,), [(pad, pad)], feature_group_count=groups,
                                      dimension_numbers=("NWC", "OIW", "NWC"))


def _conv_pos(x, w, pad, groups, dtype):
  """As ecg_fm.ConvPositional computes it now: the kernel as WIO into layers.grouped_conv1d."""
  return layers.grouped_conv1d(x, w.transpose(2, 1, 0), 1, (pad, pad), groups, jnp.dtype(dtype))


@pytest.mark.parametrize("b, t, d, groups, kernel", [(2, 40, 64, 4, 16), (2, 40, 64, 16, 16),
                                                      (2, 33, 48, 8, 7), (3, 20, 32, 1, 5)])
def test_positional_conv_backward_equals_autodiff(b, t, d, groups, kernel):
  """ECG-FM's positional convolution: same forward bit for bit, gradients to rounding, with
  the kernel gradient computed tap by tap on a CPU from 8 groups up (layers.grouped_conv1d)."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(d, d // groups, kernel)) * 0.1, jnp.float32)
  pad = kernel // 2
  ref = lambda x, w: _oiw_conv(x, w, pad, groups)
  ours = lambda x, w: _conv_pos(x, w, pad, groups, jnp.float32)
  np.testing.assert_array_equal(ours(x, w), ref(x, w))
  wt = jnp.asarray(rng.normal(size=ref(x, w).shape), jnp.float32)
  g_ref = jax.grad(lambda x, w: jnp.sum(ref(x, w) * wt), (0, 1))(x, w)
  g = jax.jit(jax.grad(lambda x, w: jnp.sum(ours(x, w) * wt), (0, 1)))(x, w)
  for a, r in zip(g, g_ref):
    assert _rel(a, r) < 2e-6
  # bfloat16 compute: the float32 kernel gets a float32 gradient near float32 autodiff's
  gb = jax.jit(jax.grad(lambda w: jnp.sum(_conv_pos(
      x, w, pad, groups, jnp.bfloat16).astype(jnp.float32) * wt)))(w)
  assert gb.dtype == jnp.float32 and _rel(gb, g_ref[1]) < 2e-2


def test_positional_conv_kernel_gradient_by_taps_only_on_cpu():
  x = jnp.ones((2, 24, 32))
  w = jnp.ones((32, 4, 8)) * 0.1  # 8 groups
  grad = jax.jit(jax.grad(lambda w: jnp.sum(_conv_pos(x, w, 4, 8, jnp.float32) ** 2)))
  assert "stablehlo.while" in grad.lower(w).as_text()  # the per-tap scan
  gpu = jax.export.export(grad, platforms=["cuda"])(w).mlir_module()
  assert "stablehlo.while" not in gpu and gpu.count("stablehlo.convolution") >= 2
