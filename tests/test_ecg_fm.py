"""ECG-FM encoder and the wav2vec 2.0 objective: shapes, SPEC counts, porting pitfalls, a step."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import models
from ecgjax.models import ecg_fm
from ecgjax.objectives import wav2vec2
from ecgjax.train import mesh as mesh_lib, optim, step as step_lib
from tests import helpers


def _count(tree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def _gelu(x):
  return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def _ln(x, scale, bias, eps=1e-5):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _signal(b=2, seed=0):
  return np.random.default_rng(seed).normal(size=(b, 12, 2500)).astype(np.float32)


def test_mu_encoder_shapes_and_frame_trace():
  enc = models.build_model("ecg_fm_encoder", "mu")
  x = jnp.asarray(_signal())
  variables = jax.jit(enc.init)(jax.random.PRNGKey(0), x)
  (emb, aux), inter = jax.jit(lambda v, x: enc.apply(v, x, capture_intermediates=True))(
      variables, x)
  fe = inter["intermediates"]["feature_extractor"]
  assert [fe[f"conv_{i}"]["__call__"][0].shape[1] for i in range(4)] == [1250, 625, 312, 156]
  assert emb.shape == (2, 64)
  assert aux["features"].shape == aux["features_ln"].shape == (2, 156, 32)
  assert aux["x_proj"].shape == aux["hidden"].shape == (2, 156, 64)
  np.testing.assert_allclose(emb, aux["hidden"].mean(1), rtol=1e-6)
  assert "mask_emb" not in variables["params"]  # created only by the masked (pretraining) path


def test_base_param_counts_match_spec():
  x = jnp.zeros((1, 12, 2500))
  enc = models.build_model("ecg_fm_encoder", "base")
  p = jax.eval_shape(lambda: enc.init(jax.random.PRNGKey(0), x))["params"]
  assert _count(p["feature_extractor"]) == 399_872
  assert _count(p["conv_pos"]) == 4_719_488
  assert all(_count(p[f"layers_{i}"]) == 7_087_872 for i in range(12))
  assert _count(p) == 90_373_248
  full = models.build_model("ecg_fm", "base")
  fp = jax.eval_shape(lambda: full.init({"params": jax.random.PRNGKey(0),
                                         "gumbel": jax.random.PRNGKey(1)},
                                        x, jnp.zeros((1, 156), bool)))["params"]
  assert _count(fp) == 90_883_072
  assert fp["quantizer"]["vars"].shape == (1, 640, 128)
  assert fp["quantizer"]["weight_proj"]["kernel"].shape == (256, 640)
  assert fp["encoder"]["mask_emb"].shape == (768,)
  assert fp["encoder"]["conv_pos"]["v"].shape == (768, 48, 128)  # torch (out, in/groups, k)
  assert fp["encoder"]["conv_pos"]["g"].shape == (1, 1, 128)  # one g per kernel tap
  small = models.build_model("ecg_fm_encoder", "small")
  sp = jax.eval_shape(lambda: small.init(jax.random.PRNGKey(0), x))["params"]
  assert _count(sp) == 90_373_248 - 4 * 7_087_872


def test_weight_norm_per_tap_and_conv_positional_matches_numpy():
  rng = np.random.default_rng(0)
  v = rng.normal(size=(6, 3, 4)).astype(np.float32)
  g = rng.uniform(0.5, 2, size=(1, 1, 4)).astype(np.float32)
  w = np.asarray(ecg_fm.weight_norm(jnp.asarray(v), jnp.asarray(g)))
  for k in range(4):
    np.testing.assert_allclose(w[:, :, k], g[0, 0, k] * v[:, :, k] / np.linalg.norm(v[:, :, k]),
                               rtol=1e-6)
  mod = ecg_fm.ConvPositional(kernel=4, groups=2)
  x = rng.normal(size=(1, 7, 6)).astype(np.float32)
  params = mod.init(jax.random.PRNGKey(0), x)["params"]
  # At init g = ||v|| per tap, so the folded weight is v itself (as torch's weight_norm).
  np.testing.assert_allclose(ecg_fm.weight_norm(params["v"], params["g"]), params["v"],
                             rtol=1e-6)
  params = {**params, "g": jnp.asarray(g), "v": jnp.asarray(v),
            "bias": jnp.asarray(rng.normal(size=6), jnp.float32)}
  y = np.asarray(mod.apply({"params": params}, x))
  # NumPy grouped conv, torch semantics: padding 2 each side, drop the last output step.
  xp = np.pad(x[0], ((2, 2), (0, 0)))
  ref = np.zeros((8, 6))
  for o in range(6):
    grp = o // 3
    for t in range(8):
      ref[t, o] = np.sum(w[o] * xp[t:t + 4, grp * 3:(grp + 1) * 3].T) + params["bias"][o]
  np.testing.assert_allclose(y[0], _gelu(ref[:7]), rtol=1e-4, atol=1e-5)


def test_layer_is_post_ln():
  layer = ecg_fm.PostLNLayer(num_heads=2, mlp_dim=16)
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 5, 8)).astype(np.float32) * 3 + 1
  params = layer.init(jax.random.PRNGKey(0), x, False)["params"]
  # Non-trivial LayerNorm affines so the check sees where each norm sits.
  params = jax.tree.map(lambda a: a + 0.1 * rng.normal(size=a.shape).astype(np.float32), params)
  y = np.asarray(layer.apply({"params": params}, x, False))
  p = jax.tree.map(np.asarray, params)
  lin = lambda h, d: h @ d["kernel"] + d["bias"]  # noqa: E731
  a = p["self_attn"]
  q = lin(x[0], a["q_proj"]).reshape(5, 2, 4) * 0.5
  k = lin(x[0], a["k_proj"]).reshape(5, 2, 4)
  v = lin(x[0], a["v_proj"]).reshape(5, 2, 4)
  s = np.einsum("qhd,khd->hqk", q, k)
  s = np.exp(s - s.max(-1, keepdims=True))
  s /= s.sum(-1, keepdims=True)
  att = lin(np.einsum("hqk,khd->qhd", s, v).reshape(5, 8), a["out_proj"])
  h = _ln(x[0] + att, **p["self_attn_layer_norm"])
  h = _ln(h + lin(_gelu(lin(h, p["fc1"])), p["fc2"]), **p["final_layer_norm"])
  np.testing.assert_allclose(y[0], h, rtol=1e-4, atol=1e-4)


def test_span_mask_fraction_and_min_spans():
  keys = jax.random.split(jax.random.PRNGKey(0), 2000)
  masks = np.asarray(jax.jit(jax.vmap(lambda k: wav2vec2.span_mask(k, 156, 0.65, 10, 2)))(keys))
  frac = masks.mean()
  # 0.65 is the nominal share (spans x 10 / 156, E[spans] = 0.65 * 15.6); overlapping spans
  # (as in the reference) leave ~50% covered.
  assert 0.44 < frac < 0.56, frac
  assert masks.sum(1).min() >= 10
  assert not masks[:, :0].any()
  tiny = np.asarray(jax.jit(jax.vmap(lambda k: wav2vec2.span_mask(k, 156, 0.0, 10, 2)))(
      keys[:200]))
  assert tiny.sum(1).min() >= 11  # two distinct starts: at least 11 frames
  assert tiny.sum(1).max() <= 20


def test_negatives_are_other_masked_frames():
  def draw(key):
    mk, nk = jax.random.split(key)
    mask = wav2vec2.span_mask(mk, 156, 0.65, 10, 2)
    return mask, wav2vec2.sample_negatives(nk, mask, 100)

  masks, all_negs = jax.jit(jax.vmap(draw))(jax.random.split(jax.random.PRNGKey(3), 50))
  for m, negs in zip(np.asarray(masks), np.asarray(all_negs)):
    rows = np.nonzero(m)[0]
    assert negs.shape == (156, 100)
    assert (negs[rows] != rows[:, None]).all()
    assert m[negs[rows]].all()


def test_quantizer_is_straight_through():
  q = ecg_fm.GumbelQuantizer(groups=2, num_vars=8, vq_dim=6)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 4))
  variables = q.init({"params": jax.random.PRNGKey(1), "gumbel": jax.random.PRNGKey(2)}, x, 2.0,
                     train=True)
  rngs = {"gumbel": jax.random.PRNGKey(3)}
  apply = jax.jit(lambda x: q.apply(variables, x, 2.0, train=True, rngs=rngs)["x"])
  out = jax.jit(lambda x: q.apply(variables, x, 2.0, train=True, rngs=rngs))(x)
  book = np.asarray(variables["params"]["vars"]).reshape(2, 8, 3)
  codes = np.asarray(out["codes"])
  expect = np.concatenate([book[0][codes[..., 0]], book[1][codes[..., 1]]], -1)
  np.testing.assert_array_equal(np.asarray(out["x"]), expect)  # exactly the chosen codes
  w = jax.random.normal(jax.random.PRNGKey(4), (2, 5, 6))
  grad = jax.jit(jax.grad(lambda x: jnp.sum(apply(x) * w)))(x)
  assert float(jnp.abs(grad).sum()) > 0


def test_gumbel_temperature_schedule():
  f = lambda s: float(wav2vec2.gumbel_temperature(jnp.asarray(s), 2.0, 0.5, 0.999995))  # noqa
  assert f(0) == pytest.approx(2.0)
  assert f(1) == pytest.approx(2.0 * 0.999995, rel=1e-6)
  assert f(100_000) == pytest.approx(2.0 * 0.999995 ** 100_000, rel=1e-4)
  assert f(277_000) > 0.5 and f(278_000) == 0.5 and f(10**7) == 0.5


def test_feature_grad_scale_reaches_extractor():
  x = jnp.asarray(_signal(1, seed=2)[:, :, :400])  # 25 frames keep the test quick
  grads = {}
  for mult in (1.0, 0.1):
    enc = models.build_model("ecg_fm_encoder", "mu", feature_grad_mult=mult, depth=0)
    params = jax.jit(enc.init)(jax.random.PRNGKey(0), x)["params"]
    grads[mult] = jax.jit(jax.grad(lambda p: jnp.sum(enc.apply({"params": p}, x)[0] ** 2)))(
        params)
  fe = lambda g: flax.traverse_util.flatten_dict(g["feature_extractor"])  # noqa: E731
  for k, g1 in fe(grads[1.0]).items():
    np.testing.assert_allclose(fe(grads[0.1])[k], 0.1 * g1, rtol=1e-3,
                               atol=1e-4 * float(np.abs(0.1 * g1).max()))
  np.testing.assert_allclose(grads[0.1]["post_extract_proj"]["kernel"],
                             grads[1.0]["post_extract_proj"]["kernel"], rtol=1e-5)


def test_nonzero_mean_pooling():
  h = jnp.asarray(np.r_[np.ones((3, 4)), np.zeros((2, 4))][None], jnp.float32) * 2
  np.testing.assert_allclose(ecg_fm.pool(h, "nonzero_mean"), np.full((1, 4), 2.0))
  np.testing.assert_allclose(ecg_fm.pool(h, "mean"), np.full((1, 4), 1.2))


def test_objective_train_step_and_export():
  obj = wav2vec2.Wav2Vec2("mu", samples=800, num_negatives=20)  # 50 frames
  batch = {"signal": _signal(2, seed=5)[:, :, :800], "index": np.arange(10, 12, dtype=np.int32)}
  config = helpers.tiny_stmem_config(base_lr=1e-3, batch_size=256, warmup_steps=0)
  tx, _ = optim.make_optimizer(config, jax.eval_shape(
      lambda: obj.init(jax.random.PRNGKey(0), batch)[0]), obj.frozen_patterns)
  state = step_lib.init_state(obj, tx, batch, seed=0)
  before = jax.tree.map(np.asarray, state["params"])
  fn = jax.jit(step_lib.make_train_step(obj, tx, mesh_lib.make_mesh(jax.devices()[:1])))
  state, metrics = fn(state, batch)
  assert np.isfinite(float(metrics["loss"]))
  for name in ("wav2vec2", "diversity", "feature_pen", "temperature", "code_perplexity"):
    assert any(name in k for k in metrics), (name, sorted(metrics))
  assert int(state["first_bad_step"]) == -1
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, np.asarray(b)), before,
                         state["params"])
  assert changed["encoder"]["feature_extractor"]["conv_0"]["kernel"]
  assert changed["final_proj"]["kernel"] and changed["quantizer"]["weight_proj"]["kernel"]
  enc_vars, desc = obj.export_encoder(state["params"], {})
  enc_params = enc_vars["params"]
  assert desc["module"] == "ecg_fm_encoder" and desc["embedding"]["dim"] == 64
  enc = models.build_model(desc["module"], desc["variant"], **desc["overrides"])
  ref = jax.eval_shape(lambda: enc.init(jax.random.PRNGKey(0), batch["signal"]))["params"]
  assert jax.tree.structure(ref) == jax.tree.structure(enc_params)
  emb, _ = enc.apply({"params": enc_params}, batch["signal"])
  assert emb.shape == (2, 64) and np.isfinite(np.asarray(emb)).all()


def test_masks_are_keyed_by_record_index():
  obj = wav2vec2.Wav2Vec2("mu", samples=2500)
  rng = jax.random.PRNGKey(7)
  a = obj.masks(rng, jnp.asarray([3, 9, 4]), 3)
  b = obj.masks(rng, jnp.asarray([4, 3]), 2)
  np.testing.assert_array_equal(a[0], b[1])
  np.testing.assert_array_equal(a[2], b[0])
