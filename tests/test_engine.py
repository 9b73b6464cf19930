"""Train-engine behaviour: optimizer, step, accumulation, combiner, NaN safety, devices, resume."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ecgjax import objectives
from ecgjax.data import batch as batch_lib
from ecgjax.objectives import base
from ecgjax.train import loop, mesh as mesh_lib, optim, step as step_lib
from tests import helpers


def _batch(n=8, seed=0):
  rng = np.random.default_rng(seed)
  return {"signal": rng.normal(size=(n, 2, 10)).astype(np.float32) + 0.5}


def _jit_step(objective, config, mesh, accum=1, combiner=None):
  tx, _ = optim.make_optimizer(config, jax.eval_shape(
      lambda: objective.init(jax.random.PRNGKey(0), _batch())[0]), objective.frozen_patterns)
  state = step_lib.init_state(objective, tx, _batch(), seed=0)
  fn = jax.jit(step_lib.make_train_step(objective, tx, mesh, accum_steps=accum,
                                        grad_combiner=combiner), donate_argnums=(0,))
  return state, fn


def test_learning_rate_rule_and_schedule():
  c = helpers.tiny_stmem_config(batch_size=512, base_lr=1.5e-4, warmup_steps=10,
                                total_steps=110, min_lr_ratio=0.0)
  assert optim.peak_learning_rate(c) == pytest.approx(3e-4)
  s = optim.make_schedule(c)
  assert float(s(0)) == 0.0
  assert float(s(5)) == pytest.approx(1.5e-4)
  assert float(s(10)) == pytest.approx(3e-4)
  assert float(s(60)) == pytest.approx(1.5e-4, rel=1e-4)  # half-way down the half-cosine
  assert float(s(110)) == pytest.approx(0.0, abs=1e-12)


def test_frozen_params_and_weight_decay_mask():
  obj = helpers.QuadraticObjective()
  c = helpers.tiny_stmem_config(weight_decay=0.5, base_lr=1.0, batch_size=256, warmup_steps=0)
  state, fn = _jit_step(obj, c, mesh_lib.make_mesh(jax.devices()[:1]))
  frozen0 = np.asarray(state["frozen"] if "frozen" in state else state["params"]["frozen"])
  for _ in range(3):
    state, _ = fn(state, _batch())
  np.testing.assert_array_equal(np.asarray(state["params"]["frozen"]), frozen0)
  assert int(state["step"]) == 3
  assert int(state["collections"]["count"]) == 3
  total, trainable = optim.count_params(state["params"], obj.frozen_patterns)
  assert (total, trainable) == (5, 3)


def test_gradient_accumulation_matches_full_batch():
  obj = helpers.QuadraticObjective()
  c = helpers.tiny_stmem_config(base_lr=0.1, batch_size=256, warmup_steps=0)
  m = mesh_lib.make_mesh()
  s1, f1 = _jit_step(obj, c, m, accum=1)
  s2, f2 = _jit_step(obj, c, m, accum=4)
  for i in range(3):
    b = mesh_lib.to_global(_batch(seed=i), m)
    s1, m1 = f1(s1, b)
    s2, m2 = f2(s2, b)
    np.testing.assert_allclose(m1["loss"], m2["loss"], rtol=1e-5)
  np.testing.assert_allclose(s1["params"]["w"], s2["params"]["w"], rtol=1e-5, atol=1e-7)


def test_gradient_combiner_sees_per_task_gradients():
  obj = helpers.QuadraticObjective()
  c = helpers.tiny_stmem_config(base_lr=0.1, batch_size=256, warmup_steps=0)
  m = mesh_lib.make_mesh(jax.devices()[:1])
  seen = {}

  def sum_combiner(per_task, rng):
    seen["shape"] = per_task["w"].shape
    return jax.tree.map(lambda g: g.sum(0), per_task)

  s1, f1 = _jit_step(obj, c, m)
  s2, f2 = _jit_step(obj, c, m, combiner=sum_combiner)
  for i in range(2):
    s1, _ = f1(s1, _batch(seed=i))
    s2, _ = f2(s2, _batch(seed=i))
  assert seen["shape"] == (2, 3)  # (tasks, params)
  np.testing.assert_allclose(s1["params"]["w"], s2["params"]["w"], rtol=1e-6)


def test_non_finite_step_is_dropped_and_recorded():
  obj = helpers.QuadraticObjective(nan_from_step=2)
  c = helpers.tiny_stmem_config(base_lr=0.1, batch_size=256, warmup_steps=0)
  state, fn = _jit_step(obj, c, mesh_lib.make_mesh(jax.devices()[:1]))
  for i in range(4):
    state, metrics = fn(state, _batch(seed=i))
    if i == 1:
      good = np.asarray(state["params"]["w"]).copy()
  assert int(state["first_bad_step"]) == 2
  np.testing.assert_array_equal(np.asarray(state["params"]["w"]), good)
  assert np.isfinite(np.asarray(state["params"]["w"])).all()


def test_train_step_compiles_once():
  obj = helpers.QuadraticObjective()
  c = helpers.tiny_stmem_config(base_lr=0.1, batch_size=256, warmup_steps=0)
  state, fn = _jit_step(obj, c, mesh_lib.make_mesh(jax.devices()[:1]))
  for i in range(3):
    state, _ = fn(state, _batch(seed=i))
  assert fn._cache_size() == 1


def _losses(workdir):
  by_step = {}
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    for line in f:
      r = json.loads(line)
      by_step[r["step"]] = r["loss"]  # a resumed run rewrites the steps it redoes
  return [by_step[k] for k in sorted(by_step)]


def test_eight_devices_match_one_device(tmp_path):
  c = helpers.tiny_stmem_config(total_steps=3, export_at_end=False)
  loop.train(c, str(tmp_path / "one"), devices=jax.devices()[:1])
  loop.train(c, str(tmp_path / "eight"), devices=jax.devices())
  one, eight = _losses(tmp_path / "one"), _losses(tmp_path / "eight")
  assert len(one) == 3
  np.testing.assert_allclose(eight, one, rtol=1e-3)


def test_fsdp_matches_replicated(tmp_path):
  c = helpers.tiny_stmem_config(total_steps=2, export_at_end=False)
  loop.train(c, str(tmp_path / "rep"))
  c.param_sharding = "fsdp"
  loop.train(c, str(tmp_path / "fsdp"))
  np.testing.assert_allclose(_losses(tmp_path / "fsdp"), _losses(tmp_path / "rep"), rtol=1e-3)


def test_kill_and_resume_reproduces_losses_on_another_device_count(tmp_path):
  c = helpers.tiny_stmem_config(total_steps=5, checkpoint_every_steps=2, export_at_end=False)
  loop.train(c, str(tmp_path / "full"))
  # "Killed" after step 3: the checkpoint at step 2 survives, step 3 is lost.
  loop.train(c, str(tmp_path / "cut"), stop_after=3)
  assert sorted(os.listdir(tmp_path / "cut" / "checkpoints"))[-1] == "2"
  loop.train(c, str(tmp_path / "cut"), devices=jax.devices()[:2])
  np.testing.assert_allclose(_losses(tmp_path / "cut"), _losses(tmp_path / "full"), rtol=1e-4)


def test_nan_loss_stops_run_and_keeps_good_checkpoint(tmp_path):
  c = helpers.tiny_stmem_config(objective="test_nan_at_3", total_steps=8,
                                checkpoint_every_steps=2, log_every_steps=4,
                                export_at_end=False)
  with pytest.raises(loop.NonFiniteLossError, match="step 3"):
    loop.train(c, str(tmp_path))
  steps = sorted(int(s) for s in os.listdir(tmp_path / "checkpoints") if s.isdigit())
  assert steps == [2]  # step 4's save is refused: the state had seen a NaN step


def test_bfloat16_compute_trains_with_float32_params(tmp_path):
  # Tens of steps: the bf16 curve tracks the float32 one (bench/bf16_curve.py runs hundreds).
  c = helpers.tiny_stmem_config(total_steps=20, dtype="bfloat16", export_at_end=False,
                                checkpoint_every_steps=20)
  loop.train(c, str(tmp_path / "bf16"), devices=jax.devices()[:2])
  c.dtype = "float32"
  loop.train(c, str(tmp_path / "f32"), devices=jax.devices()[:2])
  bf16, f32 = _losses(tmp_path / "bf16"), _losses(tmp_path / "f32")
  assert np.isfinite(bf16).all() and len(bf16) == 20
  np.testing.assert_allclose(bf16, f32, rtol=0.02)  # same model, coarser arithmetic
  assert f32[-1] < f32[0] and bf16[-1] < bf16[0]
  # Parameters and optimizer state stay float32 under bfloat16 compute.
  c.dtype = "bfloat16"
  training = step_lib.build_training(c, objectives.build(c), mesh_lib.make_mesh(
      jax.devices()[:1]), batch_lib.example_batch({"B": 8, "L": 12, "T": c.input.samples,
                                                    "K": 1}, "train"))
  floats = {x.dtype for x in jax.tree.leaves(jax.eval_shape(training.init))
            if jnp.issubdtype(x.dtype, jnp.floating)}
  assert floats == {jnp.dtype("float32")}


def test_config_augmentation_reaches_the_pipeline(tmp_path):
  c = helpers.tiny_stmem_config(total_steps=2, export_at_end=False)
  loop.train(c, str(tmp_path / "plain"))
  c.augment = "st_mem_randaugment"
  loop.train(c, str(tmp_path / "aug"))
  plain, aug = _losses(tmp_path / "plain"), _losses(tmp_path / "aug")
  assert np.isfinite(aug).all() and not np.allclose(plain, aug)
  c.augment = "mixup"
  with pytest.raises(ValueError, match="config.augment='mixup'"):
    loop.train(c, str(tmp_path / "bad"))


class _MaskedRatioObjective(helpers.QuadraticObjective):
  """Least squares per present lead, averaged over the present leads of the batch: a ratio
  loss (sum / count) as the MAE's is, reporting its count."""

  def loss(self, params, collections, batch, rng, step):
    del rng, step
    per_lead = (params["w"][0] * batch["signal"].mean(-1) - 1.0) ** 2  # (B, leads)
    mask = batch["lead_mask"]
    count = mask.sum()
    loss = (per_lead * mask).sum() / jnp.maximum(count, 1.0)
    return loss, base.LossAux(terms={"fit": loss}, metrics={}, collections=collections,
                              weight=count)


def test_accumulation_averages_ratio_losses_over_the_global_batch():
  # Micro-batches whose records lack different leads hold different counts: a mean of their
  # ratios would weigh their leads unequally; the engine weighs each by its count instead.
  obj = _MaskedRatioObjective()
  c = helpers.tiny_stmem_config(base_lr=0.1, batch_size=256, warmup_steps=0)
  rng = np.random.default_rng(0)
  signal = rng.normal(size=(8, 12, 10)).astype(np.float32) + 0.5
  lead_mask = np.ones((8, 12), np.float32)
  # Micro-batch i of 4 holds rows i and i + 4: give them 1, 3, 6 and 12 leads.
  for i, n in enumerate((1, 3, 6, 12)):
    lead_mask[[i, i + 4], n:] = 0.0
  batch = {"signal": signal * lead_mask[:, :, None], "lead_mask": lead_mask}
  tx, _ = optim.make_optimizer(c, jax.eval_shape(
      lambda: obj.init(jax.random.PRNGKey(0), batch)[0]), obj.frozen_patterns)
  m = mesh_lib.make_mesh(jax.devices()[:2])
  out = {}
  for accum in (1, 4):
    state = step_lib.init_state(obj, tx, batch, seed=0)
    fn = jax.jit(step_lib.make_train_step(obj, tx, m, accum_steps=accum))
    for _ in range(2):
      state, metrics = fn(state, mesh_lib.to_global(batch, m))
    out[accum] = (float(metrics["loss"]), np.asarray(state["params"]["w"]))
  assert out[4][0] == pytest.approx(out[1][0], rel=1e-5)
  np.testing.assert_allclose(out[4][1], out[1][1], rtol=1e-5, atol=1e-7)


def test_mae_reports_its_masked_patch_count_as_the_ratio_weight():
  from ecgjax import objectives  # pylint: disable=g-import-not-at-top
  c = helpers.tiny_stmem_config()
  obj = objectives.build(c)
  x = np.random.default_rng(1).normal(size=(2, 12, 2250)).astype(np.float32)
  lead_mask = np.ones((2, 12), np.float32)
  lead_mask[0, 6:] = 0.0
  batch = {"signal": x, "lead_mask": lead_mask, "index": np.arange(2, dtype=np.int32)}
  params, coll = obj.init(jax.random.PRNGKey(0), batch)
  _, aux = obj.loss(params, coll, batch, jax.random.PRNGKey(1), jnp.zeros((), jnp.int32))
  # 23 of 30 patches masked per present lead: 18 present leads.
  assert float(aux.weight) == 18 * 23
