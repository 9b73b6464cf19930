"""ECG-FM's CMSC + RLM (alone and inside wav2vec 2.0), and every pretraining config lowering its loss."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hybrid as hybrid_cfg
from ecgjax import objectives
from ecgjax.objectives import contrastive as con
from ecgjax.objectives import wav2vec2
from ecgjax.train import mesh as mesh_lib, step as step_lib
from tests.test_contrastive import _np_info_nce

B, LEADS, SEG = 8, 3, 400  # 25 frames per 400-sample segment: small compiles
PATIENTS = np.array([5, 5, 9, 2, 2, 2, 7, 1])  # repeated ids: several positives per row


def _batch(n=B, seed=0, samples=2 * SEG):
  rng = np.random.default_rng(seed)
  t = np.arange(samples) / 500.0
  x = np.sin(2 * np.pi * rng.uniform(0.8, 2.0, (n, LEADS, 1)) * t)
  x = x + 0.3 * rng.normal(size=(n, LEADS, samples))
  return {"signal": jnp.asarray(x, jnp.float32), "lead_mask": jnp.ones((n, LEADS)),
          "index": jnp.asarray(rng.permutation(100)[:n], jnp.int32),
          "patient": jnp.asarray(PATIENTS[:n], jnp.int32)}


def _w2v(**kw):
  opts = dict(views=2, lead_drop_p=0.5, cmsc_weight=1.0, positives="patient", num_negatives=10,
              mask_length=4)
  return wav2vec2.Wav2Vec2("mu", samples=2 * SEG, **{**opts, **kw})


def test_segments_are_adjacent_halves_with_their_own_lead_masks():
  obj = _w2v(lead_drop_p=0.0)
  batch = _batch()
  x, index, kept = obj.segments(batch, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(x[:B], batch["signal"][..., :SEG])
  np.testing.assert_array_equal(x[B:], batch["signal"][..., SEG:])
  np.testing.assert_array_equal(index, np.r_[2 * batch["index"], 2 * batch["index"] + 1])
  assert float(kept.mean()) == 1.0
  obj = _w2v(lead_drop_p=0.5)
  big = _batch(n=64)
  big["index"] = jnp.arange(64)
  x, _, kept = obj.segments(big, jax.random.PRNGKey(1))
  kept = np.asarray(kept)
  assert kept.shape == (128, LEADS) and (kept.sum(1) >= 1).all()
  assert 0.45 < kept.mean() < 0.7  # p = 0.5, plus the rescued last lead of empty draws
  # The two segments of a record draw their lead masks independently.
  assert (kept[:64] != kept[64:]).any(1).mean() > 0.4
  np.testing.assert_array_equal(np.asarray(x)[kept == 0], 0.0)


def test_full_recipe_cmsc_term_is_infonce_of_time_averaged_outputs():
  obj = _w2v()
  batch = _batch()
  params, cols = obj.init(jax.random.PRNGKey(0), batch)
  rng = jax.random.PRNGKey(3)
  _, aux = obj.loss(params, cols, batch, rng, 0)
  # The same pass by hand: segments, span masks, encoder; then InfoNCE in float64 numpy.
  mask_rng, _, drop_rng, gumbel_rng, view_rng = jax.random.split(rng, 5)
  x, index, _ = obj.segments(batch, view_rng)
  _, out = obj.model.apply({"params": params}, x, obj.masks(mask_rng, index, 2 * B), 2.0,
                           train=True, rngs={"dropout": drop_rng, "gumbel": gumbel_rng})
  z = np.asarray(out["hidden"], np.float64).mean(1)
  np.testing.assert_allclose(out["pre_logits"], z, rtol=1e-5, atol=1e-6)  # the pooled output
  pos = PATIENTS[:, None] == PATIENTS[None, :]
  np.testing.assert_allclose(aux.terms["cmsc"], _np_info_nce(z[:B], z[B:], 0.1, pos), rtol=1e-5)
  # Record-level positives are a different number when patients repeat.
  _, aux_rec = _w2v(positives="record").loss(params, cols, batch, rng, 0)
  np.testing.assert_allclose(aux_rec.terms["cmsc"],
                             _np_info_nce(z[:B], z[B:], 0.1, np.eye(B, dtype=bool)), rtol=1e-5)
  # Without CMSC the loss is the wav2vec 2.0 sum alone.
  loss0, aux0 = _w2v(cmsc_weight=0.0).loss(params, cols, batch, rng, 0)
  assert "cmsc" not in aux0.terms
  np.testing.assert_allclose(aux.terms["wav2vec2"], aux0.terms["wav2vec2"], rtol=1e-6)


def test_cmsc_on_the_ecg_fm_encoder_matches_hand_computation_with_patients():
  obj = con.LeadDropContrastive("mu", leads=("I", "II", "III"), view_len=SEG, view_mode="adjacent",
                                proj_dim=0, positives="patient", encoder="ecg_fm_encoder")
  assert obj.head is None
  batch = _batch()
  params, cols = obj.init(jax.random.PRNGKey(0), batch)
  rng = jax.random.PRNGKey(4)
  loss, aux = obj.loss(params, cols, batch, rng, 0)
  z0, z1, _ = obj.embed_views(params, batch, rng)
  pos = PATIENTS[:, None] == PATIENTS[None, :]
  np.testing.assert_allclose(loss, _np_info_nce(np.asarray(z0), np.asarray(z1), 0.1, pos),
                             rtol=1e-5)
  _, desc = obj.export_encoder(params, cols)
  assert (desc["module"], desc["input"]["samples"], desc["embedding"]["frames"]) == (
      "ecg_fm_encoder", SEG, 25)


def test_ecg_fm_cmsc_negatives_are_global_on_eight_devices():
  obj = _w2v()
  batch = _batch(16, seed=2)
  batch["patient"] = jnp.arange(16) // 3  # repeated patients across device boundaries
  params, cols = jax.jit(obj.init)(jax.random.PRNGKey(0), batch)
  rng = jax.random.PRNGKey(7)
  fn = jax.jit(jax.value_and_grad(lambda p, b: obj.loss(p, cols, b, rng, 0)[1].terms["cmsc"]))
  one = jax.devices()[0]
  l1, g1 = fn(jax.device_put(params, one), jax.device_put(batch, one))
  mesh = mesh_lib.make_mesh(jax.devices())
  l8, g8 = fn(jax.device_put(params, mesh_lib.replicated(mesh)),
              jax.device_put(batch, mesh_lib.batch_sharding(mesh)))
  np.testing.assert_allclose(l8, l1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6), g8, g1)


def _config(path_arg, module):
  c = module.get_config(path_arg)
  c.batch_size, c.warmup_steps, c.total_steps = B, 0, 12
  c.input.leads = ("I", "II", "III")
  return c


@pytest.mark.parametrize("arg", [
    "encoder=st_mem,variant=mu,preset=mae,runlocal",
    "encoder=st_mem,variant=mu,preset=contrastive,runlocal",
    "encoder=st_mem,variant=mu,preset=hybrid,runlocal",
    "encoder=ecg_fm,variant=mu,preset=mae,runlocal",
    "encoder=ecg_fm,variant=mu,preset=contrastive,runlocal",
    "encoder=ecg_fm,variant=mu,preset=hybrid,runlocal",
])
def test_a_few_steps_of_each_pretraining_config_lower_the_loss(arg):
  c = _config(arg, hybrid_cfg)
  if c.model.startswith("ecg_fm"):
    c.input.samples, c.view_samples = 2 * SEG, SEG
    c.base_lr = 2e-3 * 256 / B
    c.mask_length = 4
  else:
    # 7 patches of 75 per view (the MAE's window is its input).
    c.input.samples = 525 if c.objective == "mae" else 600
    c.view_samples = 525
    c.base_lr = 3e-3 * 256 / B
  obj = objectives.build(c)
  batch = _batch(samples=c.input.samples)
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  training = step_lib.build_training(c, obj, mesh, batch)
  state = training.init()
  losses = []
  for _ in range(c.total_steps):
    state, metrics = training.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  assert np.isfinite(losses).all()
  # The same batch every step (fresh masks/drops each time): the loss must come down.
  assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02 * abs(np.mean(losses[:3])), losses
