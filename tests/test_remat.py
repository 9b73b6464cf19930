"""config.remat: the backward pass recomputes (jax.checkpoint) and nothing else changes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import models
from ecgjax.errors import ConfigError
from ecgjax.models import layers

# Transformers: every policy (full nests sub-layer regions in the blocks'); CNNs: one (their
# blocks are the only regions, so block and full are the same program, and the policy alone
# decides what dots_saveable keeps).
CASES = [("st_mem_encoder", (2, 12, 2250), ("block", "dots_saveable", "full")),
         ("ecg_fm_encoder", (2, 12, 2500), ("block", "dots_saveable", "full")),
         ("net1d", (2, 12, 1000), ("block",)), ("resnet1d", (2, 12, 500), ("full",))]
# (resnet2d shares resnet1d's ResNetBody, where the remat lives.)


def _loss_and_grads(name, shape, remat):
  module = models.build_model(name, "mu", remat=remat)
  x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
  variables = jax.jit(lambda x: module.init(jax.random.PRNGKey(0), x))(x)
  params, rest = variables["params"], {k: v for k, v in variables.items() if k != "params"}

  def loss(p):
    out, _ = module.apply({"params": p, **rest}, x, train=True, mutable=list(rest),
                          rngs={"dropout": jax.random.PRNGKey(1)})[0] if rest else \
        module.apply({"params": p}, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    return jnp.mean(jnp.square(out))

  return jax.jit(jax.value_and_grad(loss))(params)


@pytest.mark.parametrize("name, shape, policies", CASES)
def test_every_policy_gives_the_same_loss_and_gradients(name, shape, policies):
  ref_loss, ref_grads = _loss_and_grads(name, shape, "none")
  for remat in policies:
    loss, grads = _loss_and_grads(name, shape, remat)
    assert jax.tree.structure(grads) == jax.tree.structure(ref_grads)  # same parameter paths
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
    # A recomputed forward may fuse (and so round) differently: float32 noise, relative to
    # the gradients' scale (some are zero but for rounding: a bias right before a LayerNorm).
    scale = max(float(np.abs(g).max()) for g in jax.tree.leaves(ref_grads))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * scale),
                 grads, ref_grads)


def test_remat_really_recomputes_and_bad_names_are_refused():
  module = models.build_model("st_mem_encoder", "mu", remat="block")
  x = jnp.zeros((1, 12, 2250))
  params = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))["params"]
  jaxpr = jax.make_jaxpr(jax.grad(lambda p: module.apply({"params": p}, x)[0].sum()))(params)
  assert "remat" in str(jaxpr) or "checkpoint" in str(jaxpr)
  with pytest.raises(ConfigError, match="config.remat='some'"):
    layers.check_remat("some")


def test_config_remat_reaches_every_model_and_stays_out_of_exports():
  from configs import ecgfm, hybrid, stmem  # pylint: disable=g-import-not-at-top
  from ecgjax import objectives  # pylint: disable=g-import-not-at-top
  from ecgjax.objectives import classifier  # pylint: disable=g-import-not-at-top
  for config, get in ((stmem.get_config("variant=mu"), lambda o: o.model),
                      (hybrid.get_config("variant=mu,preset=hybrid"), lambda o: o.model),
                      (hybrid.get_config("variant=mu,preset=contrastive"),
                       lambda o: o.encoder.module),
                      (ecgfm.get_config("variant=mu,recipe=wav2vec2"), lambda o: o.model)):
    config.remat = "dots_saveable"
    assert get(objectives.build(config)).remat == "dots_saveable", config.objective
  b = classifier.build_backbone("net1d", "mu", 3, remat="block")
  assert b.module.remat == "block" and "remat" not in b.overrides
