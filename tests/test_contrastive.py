"""Contrastive and hybrid objectives: InfoNCE numbers, views, global negatives, hybrid loss, e2e."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import hybrid as hybrid_config
from ecgjax.objectives import contrastive as con
from ecgjax.objectives import hybrid
from ecgjax import export as export_lib
from ecgjax.train import loop, mesh as mesh_lib, optim, step as step_lib

B, LEADS, T, VIEW = 16, 2, 1000, 750
# Tests run a 2-lead, 10-patch-per-view ST-MEM "mu" so every compile stays small on CPU.
SMALL = dict(leads=("I", "II"), view_len=VIEW)


def _np_info_nce(z1, z2, t, pos):
  # Straight from the definition, float64, one row at a time.
  n = lambda z: z / np.linalg.norm(z, axis=1, keepdims=True)
  logits = n(z1.astype(np.float64)) @ n(z2.astype(np.float64)).T / t

  def one_way(lg, ps):
    rows = []
    for i in range(lg.shape[0]):
      lsm = lg[i] - np.log(np.exp(lg[i]).sum())
      rows.append(-lsm[ps[i]].mean())
    return np.mean(rows)

  return 0.5 * (one_way(logits, pos) + one_way(logits.T, pos.T))


def test_info_nce_matches_numpy_diagonal_and_patients():
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
  eye = np.eye(6, dtype=bool)
  got = con.info_nce(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), 0.1)
  np.testing.assert_allclose(got, _np_info_nce(z1, z2, 0.1, eye), rtol=1e-5)
  patient = np.array([0, 0, 1, 2, 2, 2])
  pos = patient[:, None] == patient[None, :]
  got = con.info_nce(jnp.asarray(z1, jnp.float32), jnp.asarray(z2, jnp.float32), 0.5,
                     jnp.asarray(pos))
  np.testing.assert_allclose(got, _np_info_nce(z1, z2, 0.5, pos), rtol=1e-5)
  pm = con.positives_matrix({"patient": jnp.asarray(patient)}, "patient")
  np.testing.assert_array_equal(pm, pos)
  assert con.positives_matrix({"patient": jnp.asarray(patient)}, "record") is None


def test_info_nce_symmetric_and_scale_invariant():
  rng = np.random.default_rng(1)
  z1, z2 = (jnp.asarray(rng.normal(size=(8, 4)), jnp.float32) for _ in range(2))
  np.testing.assert_allclose(con.info_nce(z1, z2, 0.1), con.info_nce(z2, z1, 0.1), rtol=1e-6)
  np.testing.assert_allclose(con.info_nce(3 * z1, z2, 0.1), con.info_nce(z1, z2, 0.1), rtol=1e-5)
  assert float(con.retrieval_accuracy(z1, z1)) == 1.0


def test_lead_drop_keeps_one_lead_and_drops_about_p():
  x = jnp.ones((4000, 12, 5))
  out, kept = con.random_lead_drop(x, 0.5, jax.random.PRNGKey(0))
  assert kept.sum(-1).min() >= 1
  np.testing.assert_allclose(1 - kept.mean(), 0.5, atol=0.01)
  np.testing.assert_array_equal(out, x * kept[:, :, None])
  # p = 1 leaves exactly one lead, and only one the record has.
  have = jnp.zeros((4000, 12)).at[:, 3:5].set(1.0)
  _, kept = con.random_lead_drop(x, 1.0, jax.random.PRNGKey(1), have)
  np.testing.assert_array_equal(kept.sum(-1), 1)
  assert float((kept * (1 - have)).sum()) == 0


def test_views_two_crops_and_adjacent():
  t = jnp.arange(2500, dtype=jnp.float32)
  x = jnp.broadcast_to(t, (32, 2, 2500))
  keys = con.record_keys(jax.random.PRNGKey(0), jnp.arange(32), 32)
  v0, v1 = con.make_views(x, keys, "two_crops", 2250)
  assert v0.shape == (32, 2, 2250)
  s0, s1 = np.asarray(v0[:, 0, 0]), np.asarray(v1[:, 0, 0])
  np.testing.assert_array_equal(v0[:, 0], s0[:, None] + np.arange(2250))  # contiguous crops
  assert s0.max() <= 250 and (s0 != s1).any()
  a0, a1 = con.make_views(x, keys, "adjacent", 1250)
  np.testing.assert_array_equal(a0[:, 0, 0], 0)
  np.testing.assert_array_equal(a1[:, 0, 0], 1250)
  with pytest.raises(ValueError, match="input.samples"):
    con.make_views(x, keys, "adjacent", 2250)


def _config(preset="hybrid", **overrides):
  c = hybrid_config.get_config(f"variant=mu,runlocal,preset={preset}")
  for k, v in overrides.items():
    setattr(c, k, v)
  return c


def _batch(n=B, seed=0):
  rng = np.random.default_rng(seed)
  return {"signal": rng.normal(size=(n, LEADS, T)).astype(np.float32),
          "lead_mask": np.ones((n, LEADS), np.float32),
          "index": rng.permutation(1000)[:n].astype(np.int32)}


def test_contrastive_negatives_are_global_across_eight_devices():
  obj = con.LeadDropContrastive("mu", **SMALL)
  batch = _batch()
  params, cols = jax.jit(obj.init)(jax.random.PRNGKey(0), batch)
  rng = jax.random.PRNGKey(7)
  fn = jax.jit(jax.value_and_grad(lambda p, b: obj.loss(p, cols, b, rng, 0)[0]))

  one_dev = jax.devices()[0]
  loss1, g1 = fn(jax.device_put(params, one_dev), jax.device_put(batch, one_dev))
  mesh = mesh_lib.make_mesh(jax.devices())
  assert mesh.devices.size == 8
  sharded = jax.device_put(batch, mesh_lib.batch_sharding(mesh))
  assert len(sharded["signal"].sharding.device_set) == 8
  loss8, g8 = fn(jax.device_put(params, mesh_lib.replicated(mesh)), sharded)
  np.testing.assert_allclose(loss8, loss1, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g8, g1)
  # Per-device InfoNCE (2 records each: 1 negative) would be a different, smaller number.
  loss_fn = jax.jit(lambda b: obj.loss(params, cols, b, rng, 0)[0])
  local = np.mean([loss_fn({k: v[i:i + 2] for k, v in batch.items()}) for i in range(0, B, 2)])
  assert float(loss1) > local + 0.5
  # Same records in another order: same loss (views keyed per record, not per position).
  perm = np.random.default_rng(3).permutation(B)
  shuffled = {k: v[perm] for k, v in batch.items()}
  np.testing.assert_allclose(fn(params, shuffled)[0], loss1, rtol=1e-5)


def _engine_step(obj, batch, config):
  mesh = mesh_lib.make_mesh(jax.devices()[:2])
  abstract = jax.eval_shape(lambda: obj.init(jax.random.PRNGKey(0), batch)[0])
  tx, _ = optim.make_optimizer(config, abstract, obj.frozen_patterns)
  state = jax.jit(lambda: step_lib.init_state(obj, tx, batch, seed=0))()
  fn = jax.jit(step_lib.make_train_step(obj, tx, mesh))
  return state, fn(state, mesh_lib.to_global(batch, mesh))


def _hybrid(**kw):
  return hybrid.HybridObjective("mu", **SMALL, **kw)


def test_hybrid_fixed_weights_and_engine_step():
  obj = _hybrid(w_mae=0.7, w_con=0.3)
  batch = _batch(8)
  state, (new_state, metrics) = _engine_step(obj, batch, _config())
  assert int(new_state["step"]) == 1 and np.isfinite(metrics["loss"])
  np.testing.assert_allclose(metrics["loss"], 0.7 * metrics["mae"] + 0.3 * metrics["contrastive"],
                             rtol=1e-6)
  loss, aux = jax.jit(obj.loss)(state["params"], {}, batch, jax.random.PRNGKey(1), 0)
  assert set(aux.tasks) == {"mae", "contrastive"}
  np.testing.assert_allclose(loss, aux.tasks["mae"] + aux.tasks["contrastive"], rtol=1e-6)
  np.testing.assert_allclose(loss, 0.7 * aux.terms["mae"] + 0.3 * aux.terms["contrastive"],
                             rtol=1e-6)


def test_hybrid_visible_embedding_is_the_encoders_pooled_visible_tokens():
  obj = _hybrid()
  batch = _batch(4)
  params, _ = jax.jit(obj.init)(jax.random.PRNGKey(0), batch)
  x = jnp.asarray(batch["signal"][:, :, :VIEW])
  noise = jax.random.uniform(jax.random.PRNGKey(2), (4, LEADS, VIEW // 75))
  _, aux = jax.jit(lambda p: obj.model.apply({"params": p}, x, noise))(params["model"])
  want, _ = jax.jit(lambda p, k: obj.encoder.apply({"params": p}, x, keep_idx=k))(
      params["model"]["encoder"], aux["keep_idx"])
  np.testing.assert_allclose(aux["pre_logits"], want,
                             rtol=1e-5, atol=1e-5)  # two compiled programs: float reassociation
  # The "full" pass sees every patch: a different embedding, a different loss.
  full = _hybrid(contrastive_pass="full")
  rng = jax.random.PRNGKey(1)
  vis = jax.jit(obj.task_losses)(params, batch, rng)[0]
  ful = jax.jit(full.task_losses)(params, batch, rng)[0]
  np.testing.assert_allclose(vis["mae"], ful["mae"], rtol=1e-6)
  assert abs(float(vis["contrastive"]) - float(ful["contrastive"])) > 1e-6


def test_hybrid_uncertainty_weights_get_gradients():
  obj = _hybrid(weighting="uncertainty")
  batch = _batch(8)
  params, _ = jax.jit(obj.init)(jax.random.PRNGKey(0), batch)
  assert set(params["log_vars"]) == {"mae", "contrastive"}
  (loss, aux), grads = jax.jit(jax.value_and_grad(obj.loss, has_aux=True))(
      params, {}, batch, jax.random.PRNGKey(1), 0)
  # At s = 0: L = L_mae + L_con, dL/ds_t = 1 - L_t.
  np.testing.assert_allclose(loss, aux.terms["mae"] + aux.terms["contrastive"], rtol=1e-6)
  for t in ("mae", "contrastive"):
    np.testing.assert_allclose(grads["log_vars"][t], 1 - aux.terms[t], rtol=1e-5)
  params["log_vars"]["mae"] = jnp.asarray(1.0)
  loss2, aux2 = jax.jit(obj.loss)(params, {}, batch, jax.random.PRNGKey(1), 0)
  np.testing.assert_allclose(
      loss2, np.exp(-1.0) * aux2.terms["mae"] + 1.0 + aux2.terms["contrastive"], rtol=1e-6)


def test_presets_build_and_differ_only_in_intended_keys():
  flat = lambda c: dict(_flatten(c.to_dict()))
  configs = {p: _config(p) for p in hybrid_config.PRESETS}
  arms = {p: flat(c) for p, c in configs.items()}
  # Outside the objective's group (and the group's flat aliases) the arms share every key.
  own = {p: set(configs[p][configs[p].objective]) for p in arms}
  outside = {p: {k: v for k, v in arms[p].items()
                 if k.split(".")[0] not in own[p] | {configs[p].objective}} for p in arms}
  intended = {"preset", "objective", "model"}
  # The mae arm is the hybrid objective without InfoNCE (tests/test_configs.py checks that
  # w_con is its only difference); the contrastive arm has its own objective.
  assert arms["mae"]["objective"] == "hybrid" and configs["mae"].hybrid.w_con == 0.0
  for p in ("contrastive",):
    assert set(outside[p]) == set(outside["hybrid"])
    diff = {k for k in outside[p] if outside[p][k] != outside["hybrid"][k]}
    assert diff <= intended, (p, diff - intended)
    # The ablation arms' groups are the hybrid's, restricted to the keys each objective has.
    group = configs[p][configs[p].objective]
    assert own[p] < own["hybrid"]
    assert {k: group[k] for k in own[p]} == {k: configs["hybrid"].hybrid[k] for k in own[p]}
  assert "mask_ratio" not in configs["contrastive"]
  from ecgjax import objectives
  built = {p: objectives.build(_config(p)) for p in hybrid_config.PRESETS}
  assert isinstance(built["hybrid"], hybrid.HybridObjective)
  assert isinstance(built["contrastive"], con.LeadDropContrastive)
  with pytest.raises(ValueError, match="preset"):
    hybrid_config.get_config("preset=both")


def _flatten(d, prefix=""):
  for k, v in d.items():
    if isinstance(v, dict):
      yield from _flatten(v, f"{prefix}{k}.")
    else:
      yield f"{prefix}{k}", v


def test_hybrid_config_trains_two_steps_and_exports(tmp_path):
  c = _config(data="synthetic:32?seed=0&fs=250&seconds=10", batch_size=8, total_steps=2,
              warmup_steps=1, log_every_steps=1, checkpoint_every_steps=2, view_samples=VIEW)
  c.input.leads, c.input.samples = SMALL["leads"], T
  loop.train(c, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows] == [1, 2]
  for r in rows:
    assert np.isfinite([r["loss"], r["mae"], r["contrastive"]]).all()
    np.testing.assert_allclose(r["loss"], r["mae"] + r["contrastive"], rtol=1e-5)
  exp = export_lib.load_export(str(tmp_path / "export"))
  assert exp.config["training"]["objective"] == "hybrid"
  seq_len = exp.config["encoder"]["overrides"]["seq_len"]
  assert seq_len == VIEW and "decoder_head" not in exp.params
  emb, _ = exp.module.apply({"params": exp.params}, jnp.zeros((1, LEADS, seq_len)))
  assert emb.shape == (1, exp.dim) and os.path.isdir(tmp_path / "checkpoints")


def test_hybrid_export_is_embeddable_at_its_view_length(tmp_path):
  """The export's contract says 2250 samples (the view), not the 2500-sample training window."""
  from configs import hybrid as hybrid_config
  from ecgjax import data
  from ecgjax.eval import embed
  from ecgjax import export as export_lib
  from ecgjax.train import loop
  c = hybrid_config.get_config("variant=mu,preset=hybrid,runlocal")
  c.data, c.batch_size, c.total_steps, c.log_every_steps = "synthetic:16?seed=2", 8, 1, 1
  c.checkpoint_every_steps, c.data_workers = 1, 0
  loop.train(c, str(tmp_path))
  exp = export_lib.load_export(str(tmp_path / "export"))
  assert exp.contract.samples == c.view_samples
  out = embed.embed_source(exp, data.open_source("synthetic:4?seed=9"), batch_size=4,
                           progress=False)
  assert out["embeddings"].shape == (4, exp.dim)
