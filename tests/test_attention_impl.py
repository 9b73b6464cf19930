"""Attention through jax.nn.dot_product_attention: which implementation, and that it changes
nothing (the written-out path, used for rollout and attention dropout, is the reference)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import models
from ecgjax.models import layers


@pytest.mark.parametrize("platform, dtype, head_dim, want", [
    ("gpu", jnp.bfloat16, 64, "cudnn"), ("cuda", jnp.float16, 64, "cudnn"),
    ("gpu", jnp.bfloat16, 128, "cudnn"), ("gpu", jnp.bfloat16, 72, "cudnn"),
    ("gpu", jnp.float32, 64, "xla"),     # cuDNN's fused kernel is half precision only
    ("gpu", jnp.bfloat16, 12, "xla"),    # head dim not a multiple of 8
    ("gpu", jnp.bfloat16, 256, "xla"),   # above 128
    ("cpu", jnp.bfloat16, 64, "xla"), ("tpu", jnp.bfloat16, 64, "xla"),
])
def test_implementation_choice(platform, dtype, head_dim, want):
  assert layers.attention_implementation(dtype, head_dim, platform) == want


def test_this_machine_gets_xla():
  assert layers.attention_implementation(jnp.bfloat16, 64) == (
      "cudnn" if jax.default_backend() == "gpu" else "xla")


def test_attend_equals_the_written_out_softmax():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=(2, 50, 3, 16)), jnp.float32) for _ in range(3))
  want = jnp.einsum("bhqk,bkhd->bqhd", layers.attention_weights(q, k), v)
  np.testing.assert_allclose(layers.attend(q, k, v), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, samples", [("st_mem_encoder", 2250), ("ecg_fm_encoder", 2500)])
def test_encoders_fused_equal_written_out(name, samples):
  """The same encoder, fused (plain apply) and written out (intermediates mutable)."""
  module = models.build_model(name, "mu")
  x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 12, samples)), jnp.float32)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), x)
  fused, _ = jax.jit(module.apply)(variables, x)
  (written, _), state = jax.jit(lambda v, x: module.apply(v, x, mutable=["intermediates"]))(
      variables, x)
  assert jax.tree.leaves(state["intermediates"])  # the written-out path really ran
  np.testing.assert_allclose(fused, written, rtol=1e-5, atol=1e-6)
