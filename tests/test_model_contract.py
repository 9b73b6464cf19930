"""Every model returns (output, aux); every encoder has one call signature, pre_logits and
tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import models

# Encoders at test size with an input of their kind (abstract: shapes only, nothing compiles).
ENCODERS = {
    "st_mem_encoder": (12, 2250),
    "ecg_fm_encoder": (12, 2500),
    "net1d": (12, 1000),
    "resnet1d": (12, 1000),
    "resnet2d": (64, 64, 1),
}


def _abstract(name, **kwargs):
  module = models.build_model(name, "mu")
  x = jax.ShapeDtypeStruct((2,) + ENCODERS[name], jnp.float32)
  return module, jax.eval_shape(
      lambda x: module.init_with_output(jax.random.PRNGKey(0), x, **kwargs)[0], x)


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_takes_one_signature_and_reports_pre_logits(name):
  module, (out, aux) = _abstract(name, train=False, lead_idx=None)
  assert aux["pre_logits"].ndim == 2 and aux["pre_logits"].shape[0] == 2
  assert aux["pre_logits"].dtype == jnp.float32
  # ... and its token sequence (B, N, D), what attention-pooling probes read.
  tokens = aux["tokens"]
  assert tokens.ndim == 3 and tokens.shape[0] == 2 and tokens.shape[1] >= 2
  if not models.has_lead_table(module):
    with pytest.raises(ValueError, match="no lead table: lead_idx must be None"):
      _abstract(name, train=False, lead_idx=np.arange(ENCODERS[name][0]))


def test_encoder_pre_logits_is_its_pooled_output():
  module = models.build_model("net1d", "mu", num_classes=0)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 12, 500)), jnp.float32)
  (emb, aux), _ = module.init_with_output(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(emb, aux["pre_logits"])


def test_pretraining_models_return_output_and_aux_with_pre_logits():
  mae = models.build_model("st_mem", "mu")
  x = jax.ShapeDtypeStruct((2, 12, 2250), jnp.float32)
  noise = jax.ShapeDtypeStruct((2, 12, 30), jnp.float32)
  pred, aux = jax.eval_shape(
      lambda x, n: mae.init_with_output(jax.random.PRNGKey(0), x, n)[0], x, noise)
  assert pred.shape == (2, 12, 30, 75) and aux["pre_logits"].shape == (2, mae.width)
  w2v = models.build_model("ecg_fm", "mu")
  x = jax.ShapeDtypeStruct((2, 12, 2500), jnp.float32)
  mask = jax.ShapeDtypeStruct((2, 156), jnp.bool_)
  out, aux = jax.eval_shape(lambda x, m: w2v.init_with_output(
      {"params": jax.random.PRNGKey(0), "gumbel": jax.random.PRNGKey(1)}, x, m)[0], x, mask)
  assert {"preds", "targets", "codes"} <= set(out)
  assert aux["pre_logits"].shape == (2, w2v.width)
