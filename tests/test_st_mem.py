"""ST-MEM: golden exactness against the official PyTorch outputs, sizes, masking, leads, dtypes."""

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax.interop import st_mem as interop
from ecgjax.models import build_model, layers, st_mem
from ecgjax.objectives.mae import norm_pix_loss
from tests.helpers import n_params, rel_err

# The golden tiny config (golden/st_mem_tiny.json): width 128, depth 2, 2 heads; decoder 128/1/2.
TINY = dict(width=128, depth=2, num_heads=2, mlp_dim=512, decoder_width=128, decoder_depth=1,
            decoder_heads=2, decoder_mlp_dim=512)
TOL = 1e-5


def flat_paths(tree) -> dict[str, tuple[int, ...]]:
  """'/'-joined param path -> shape."""
  return {"/".join(k.key for k in path): x.shape
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def abstract_params(model: nn.Module, n_leads: int = 12):
  """Param tree of ShapeDtypeStructs: sizes without materialising weights."""
  x = jax.ShapeDtypeStruct((1, n_leads, model.seq_len), jnp.float32)
  if isinstance(model, st_mem.STMEM):
    noise = jax.ShapeDtypeStruct((1, n_leads, model.num_patches), jnp.float32)
    return jax.eval_shape(model.init, jax.random.key(0), x, noise)["params"]
  return jax.eval_shape(model.init, jax.random.key(0), x)["params"]


# ----------------------------------------------------------------------------------------- golden


@pytest.fixture(scope="module")
def golden(shared_dir):
  """(arrays, official state dict, tiny STMEM, mapped params) from golden/st_mem_tiny.npz."""
  data = np.load(shared_dir / "golden" / "st_mem_tiny.npz")
  golden = {k: data[k] for k in data.files}
  state = {k.removeprefix("param/"): v for k, v in golden.items() if k.startswith("param/")}
  model = st_mem.STMEM(**TINY)
  params = interop.params_from_torch_state_dict(state, full_model=True,
                                                template=abstract_params(model))
  return golden, state, model, params


def run_golden(model, params, golden):
  """(pred, aux, loss) of the MAE on the golden input and masking noise."""
  pred, aux = jax.jit(model.apply)({"params": params}, golden["input"], golden["mask_noise"])
  loss = norm_pix_loss(golden["input"], pred, aux["mask"], model.patch_size)
  return pred, aux, loss


def test_golden_full_model(golden):
  g, _, model, params = golden
  pred, aux, loss = run_golden(model, params, g)
  errs = {"pred": rel_err(pred, g["pred"]), "latent": rel_err(aux["latent"], g["latent"]),
          "loss": rel_err(loss, g["loss"])}
  print("golden relative errors:", errs)  # measured: pred 6.5e-7, latent 4.8e-7, loss 5.2e-7
  np.testing.assert_array_equal(np.asarray(aux["mask"]), g["mask"])
  assert aux["latent"].shape == (2, 12 * (7 + 2), 128)
  assert all(e < TOL for e in errs.values()), errs


def test_golden_encoder_embedding(golden):
  g, state, model, params = golden
  emb, aux = jax.jit(model.make_encoder().apply)({"params": params["encoder"]}, g["input"])
  err = rel_err(emb, g["embedding"])
  print("golden embedding relative error:", err)  # measured: 1.9e-7
  assert err < TOL
  assert aux["tokens"].shape == (2, 12 * 32, 128)
  # The same weights via the encoder-only key layout (encoder.pth) give the same embedding.
  enc_state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
  enc_params = interop.params_from_torch_state_dict(enc_state, full_model=False)
  jax.tree.map(np.testing.assert_array_equal, enc_params, params["encoder"])


def test_golden_detects_tanh_gelu_and_flax_ln_eps(golden, monkeypatch):
  """The golden tolerance is tight enough to catch both classic porting slips."""
  g, _, model, params = golden
  exact_gelu = nn.gelu
  monkeypatch.setattr(nn, "gelu", lambda x, approximate=False: exact_gelu(x, approximate=True))
  assert rel_err(run_golden(model, params, g)[0], g["pred"]) > 10 * TOL
  monkeypatch.undo()
  ln = layers.layer_norm
  monkeypatch.setattr(layers, "layer_norm", lambda name=None, *, epsilon=1e-6, dtype=jnp.float32:
                      ln(name, epsilon=1e-6, dtype=dtype))
  assert rel_err(run_golden(model, params, g)[0], g["pred"]) > 10 * TOL


def test_golden_sincos_tables(golden):
  _, state, _, _ = golden
  # The models init both tables with this (checked in test_param_tree_and_init); torch computes
  # the code in float32, hence the 1e-6-level differences.
  table = layers.sep_padded_sincos_init(30)(jax.random.key(0), (32, 128))
  np.testing.assert_allclose(table, state["encoder.pos_embedding"][0], atol=3e-6)
  np.testing.assert_allclose(table, state["decoder_pos_embed"][0], atol=3e-6)


def test_import_reports_missing_and_unexpected_keys(golden):
  _, state, model, _ = golden
  broken = dict(state)
  del broken["encoder.block1.ff.fn.net.3.bias"]
  broken["encoder.bogus.weight"] = np.zeros(3, np.float32)
  with pytest.raises(ValueError, match=r"block1\.ff\.fn\.net\.3\.bias(.|\n)*encoder\.bogus"):
    interop.params_from_torch_state_dict(broken, full_model=True)
  # A whole missing block is only visible against the model's template.
  shallow = {k: v for k, v in state.items() if not k.startswith("encoder.block1.")}
  with pytest.raises(ValueError, match="missing encoder/block_1"):
    interop.params_from_torch_state_dict(shallow, full_model=True,
                                         template=abstract_params(model))
  with pytest.raises(ValueError, match="unexpected"):
    interop.params_from_torch_state_dict(state, full_model=False)


# ---------------------------------------------------------------------------------- layer details


def test_block_matches_numpy_reference_exact_gelu_and_eps():
  """Pre-LN block vs NumPy with erf GELU and eps 1e-5, on near-flat input where eps matters."""
  from scipy.special import erf
  block = layers.Block(num_heads=2, mlp_dim=96)
  x = 1e-3 * np.random.default_rng(0).normal(size=(2, 5, 32)).astype(np.float32)
  params = jax.jit(block.init)(jax.random.key(1), x)["params"]
  params = jax.tree.map(  # non-trivial LN affine params, so scale/bias mix-ups show
      lambda a: a + 0.1 * np.random.default_rng(a.size).normal(size=a.shape), params)
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)

  def ln(v, q):
    c = v - v.mean(-1, keepdims=True)
    return c / np.sqrt((c ** 2).mean(-1, keepdims=True) + 1e-5) * q["scale"] + q["bias"]

  def lin(v, q):
    return v @ q["kernel"] + q["bias"]

  xs = x.astype(np.float64)
  qkv = lin(ln(xs, p["attn_norm"]), p["attn"]["qkv"]).reshape(2, 5, 3, 2, 64)
  q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))  # b h n d
  s = q @ k.transpose(0, 1, 3, 2) / 8.0
  w = np.exp(s - s.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  att = (w @ v).transpose(0, 2, 1, 3).reshape(2, 5, 128)
  h = xs + lin(att, p["attn"]["out"])
  m = lin(ln(h, p["mlp_norm"]), p["mlp"]["fc1"])
  want = h + lin(0.5 * m * (1 + erf(m / np.sqrt(2))), p["mlp"]["fc2"])
  got = jax.jit(block.apply)({"params": params}, x)
  assert rel_err(got, want) < 1e-5


def test_sincos_1d():
  t = layers.sincos_1d(30, 8)
  np.testing.assert_allclose(t[3, :4], np.sin(3 * 10000. ** (-np.arange(4) / 4)), rtol=1e-6)
  np.testing.assert_allclose(t[3, 4:], np.cos(3 * 10000. ** (-np.arange(4) / 4)), rtol=1e-6)


# --------------------------------------------------------------------------------- sizes and init


@pytest.mark.parametrize("variant,want", [("S/75", 21_341_718), ("B/75", 85_150_614)])
def test_encoder_param_counts(variant, want):
  params = abstract_params(build_model("st_mem_encoder", variant))
  assert n_params(params) == want
  if variant == "B/75":
    assert params["pos_embedding"].shape == (32, 768)  # 24,576 params


def test_full_model_param_counts_and_frozen():
  params = abstract_params(build_model("st_mem", "B/75"))
  paths = flat_paths(params)
  frozen = [k for k in paths
            if any(re.search(r, k) for r in st_mem.FROZEN_IN_PRETRAINING)]
  assert sorted(frozen) == ["decoder_pos_embedding", "encoder/pos_embedding"]
  assert n_params(params) == 88_534_753
  assert n_params(params) - sum(int(np.prod(paths[k])) for k in frozen) == 88_501_985


def test_param_tree_and_init(mu):
  p = mu["params"]
  assert set(p) == {"encoder", "decoder_embed", "mask_embedding", "decoder_pos_embedding",
                    "decoder_block_0", "decoder_norm", "decoder_head"}
  assert set(p["encoder"]) == {"patch_in_norm", "patch_embed", "patch_out_norm", "pos_embedding",
                               "sep_embedding", "lead_embedding", "block_0", "norm"}
  for pos in (p["encoder"]["pos_embedding"], p["decoder_pos_embedding"]):
    assert not np.any(pos[0]) and not np.any(pos[-1])
    np.testing.assert_allclose(pos[1:-1], layers.sincos_1d(30, 64))
  assert 0.01 < float(jnp.std(p["encoder"]["lead_embedding"])) < 0.03
  assert not np.any(p["encoder"]["block_0"]["attn"]["qkv"]["bias"])
  qkv = p["encoder"]["block_0"]["attn"]["qkv"]["kernel"]  # xavier over the fused (64, 192)
  assert float(jnp.abs(qkv).max()) <= np.sqrt(6 / (64 + 192)) + 1e-6
  assert jax.tree.all(jax.tree.map(lambda a: a.dtype == jnp.float32, p))


def test_unknown_names():
  with pytest.raises(ValueError, match="B/75"):
    st_mem.decode_variant("XL/75")
  with pytest.raises(ValueError, match="st_mem_encoder"):
    build_model("vit", "B/75")
  assert st_mem.decode_variant("B/75")["decoder_width"] == 256


# ------------------------------------------------------------------------- masking, leads, dtypes


@pytest.fixture(scope="module")
def mu():
  """The tiny model, its params, an input batch and its float32 outputs (compiled once)."""
  model = build_model("st_mem", "mu")
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 12, 2250)).astype(np.float32)
  noise = rng.uniform(size=(2, 12, 30)).astype(np.float32)
  params = jax.jit(model.init)(jax.random.key(0), x, noise)["params"]
  pred, aux = jax.jit(model.apply)({"params": params}, x, noise)
  return dict(model=model, params=params, x=x, noise=noise, pred=pred, aux=aux)


def test_masking(mu):
  pred, aux, noise = mu["pred"], mu["aux"], mu["noise"]
  keep, mask = np.asarray(aux["keep_idx"]), np.asarray(aux["mask"])
  assert pred.shape == (2, 12, 30, 75)
  assert keep.shape == (2, 12, 7) and aux["latent"].shape == (2, 108, 64)
  np.testing.assert_array_equal(keep, np.argsort(noise, axis=-1)[..., :7])
  np.testing.assert_array_equal(mask.sum(-1), 23)
  np.testing.assert_array_equal(np.take_along_axis(mask, keep, axis=-1), 0)


def test_lead_subset_keeps_own_lead_embedding(mu):
  enc, p, x = mu["model"].make_encoder(), mu["params"]["encoder"], mu["x"]
  apply = jax.jit(lambda p, x, idx: enc.apply({"params": p}, x, lead_idx=idx)[0])
  sub = x[:, [0, 7]]
  base = apply(p, sub, jnp.array([0, 7]))

  delta = jnp.asarray(np.random.default_rng(3).normal(size=64), jnp.float32)

  def bump(row):  # not a constant shift: LayerNorms would cancel that
    return {**p, "lead_embedding": p["lead_embedding"].at[row].add(delta)}

  assert rel_err(apply(bump(7), sub, jnp.array([0, 7])), base) > 1e-3
  np.testing.assert_array_equal(apply(bump(1), sub, jnp.array([0, 7])), base)
  # Same as a model whose first two lead rows are I and V2, used with the default indices.
  moved = {**p, "lead_embedding": p["lead_embedding"][jnp.array([0, 7] + list(range(2, 12)))]}
  got = jax.jit(enc.apply)({"params": moved}, sub)[0]
  np.testing.assert_allclose(got, base, rtol=1e-6, atol=1e-6)


def test_wrong_length_raises(mu):
  model, params, x, noise = mu["model"], mu["params"], mu["x"], mu["noise"]
  with pytest.raises(ValueError, match="crops of 2250"):
    model.make_encoder().apply({"params": params["encoder"]}, x[..., :2000])
  with pytest.raises(ValueError, match="crops of 2250"):
    model.apply({"params": params}, np.zeros((2, 12, 2500), np.float32), noise)


def test_bfloat16_close_to_float32(mu):
  model, params, x, noise, pred32 = mu["model"], mu["params"], mu["x"], mu["noise"], mu["pred"]
  model16 = build_model("st_mem", "mu", dtype=jnp.bfloat16)
  p16 = abstract_params(model16)
  assert jax.tree.all(jax.tree.map(lambda a: a.dtype == jnp.float32, p16))
  pred16, aux16 = jax.jit(model16.apply)({"params": params}, x, noise)
  assert pred16.dtype == jnp.bfloat16 and aux16["latent"].dtype == jnp.bfloat16
  assert rel_err(pred16, pred32) < 5e-2
  emb16, _ = jax.jit(model16.make_encoder().apply)({"params": params["encoder"]}, x)
  emb32, _ = jax.jit(model.make_encoder().apply)({"params": params["encoder"]}, x)
  assert emb16.dtype == jnp.float32 and rel_err(emb16, emb32) < 5e-2


def test_backward_fusion_barrier_keeps_gradients_exact():
  """The CPU barrier (identity matmul on the cotangent) must not change any gradient."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 64))

  class Stack(nn.Module):
    barrier: bool

    @nn.compact
    def __call__(self, x):
      for i in range(3):
        if self.barrier:
          x = layers.backward_fusion_barrier(x)
        x = x + layers.Mlp(128, name=f"m{i}")(layers.layer_norm(f"n{i}")(x))
      return x

  params = Stack(True).init(jax.random.PRNGKey(1), x)
  loss = lambda m: lambda p, x: jnp.sum(m.apply(p, x) ** 2)
  g_with = jax.grad(loss(Stack(True)), argnums=(0, 1))(params, x)
  g_without = jax.grad(loss(Stack(False)), argnums=(0, 1))(params, x)
  for a, b in zip(jax.tree.leaves(g_with), jax.tree.leaves(g_without)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
