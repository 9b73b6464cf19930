"""Attention rollout of the transformer encoders against hand computations, and the CLI."""

import os
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import models
from ecgjax.explain import attention

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _stmem(depth, t=750, leads=3, seed=0):
  module = models.build_model("st_mem_encoder", "mu", seq_len=t, depth=depth)
  x = np.random.default_rng(seed).normal(size=(2, leads, t)).astype(np.float32)
  variables = jax.jit(module.init)(jax.random.PRNGKey(seed), jnp.asarray(x))
  return module, variables, x


def test_uniform_attention_gives_the_closed_form():
  """q = k = 0 makes every layer's attention uniform (U = 1/N): (0.5 U + 0.5 I)^L =
  0.5^L I + (1 - 0.5^L) U, so a patch token gets 0.5^L / patches + (1 - 0.5^L) / N and a SEP
  (not pooled) (1 - 0.5^L) / N."""
  depth, t, leads = 3, 750, 3
  module, variables, x = _stmem(depth, t, leads)
  params = jax.tree_util.tree_map(np.array, variables["params"])  # writable copies
  for i in range(depth):
    qkv = params[f"block_{i}"]["attn"]["qkv"]
    w = qkv["kernel"].reshape(qkv["kernel"].shape[0], 3, -1)
    w[:, :2] = 0.0  # q and k columns; v keeps its weights
    qkv["kernel"] = w.reshape(qkv["kernel"].shape)
    qkv["bias"].reshape(3, -1)[:2] = 0.0
  ro = attention.attention_rollout(module, {"params": params}, x)
  n_patch = t // module.patch_size
  n = leads * (n_patch + 2)
  keep = 0.5 ** depth
  assert ro.layers == depth and ro.tokens.shape == (2, leads, n_patch)
  np.testing.assert_allclose(ro.tokens, keep / (leads * n_patch) + (1 - keep) / n, rtol=1e-5)
  # On the input: every sample carries its patch's value.
  np.testing.assert_allclose(ro.attributions[:, :, :module.patch_size],
                             np.repeat(ro.tokens[:, :, :1], module.patch_size, -1))


def test_sown_maps_are_the_softmax_of_the_blocks_and_rollout_is_their_product():
  depth = 2
  module, variables, x = _stmem(depth, seed=1)
  inputs = []

  def grab(next_fun, args, kwargs, ctx):  # the LayerNorm output each attention layer reads
    if isinstance(ctx.module, models.layers.MultiHeadAttention):
      inputs.append(np.asarray(args[0]))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    _, state = module.apply(variables, jnp.asarray(x), mutable=["intermediates"])
  maps = attention._attention_maps(state["intermediates"])  # pylint: disable=protected-access
  assert len(maps) == depth == len(inputs)
  for i, (y, got) in enumerate(zip(inputs, maps)):
    p = variables["params"][f"block_{i}"]["attn"]["qkv"]
    qkv = (y @ np.asarray(p["kernel"]) + np.asarray(p["bias"]))
    b, n, _ = y.shape
    qkv = qkv.reshape(b, n, 3, module.num_heads, -1)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(got), w.mean(1), atol=1e-5)
  want = np.broadcast_to(np.eye(maps[0].shape[-1]), maps[0].shape)
  for a in maps:
    a = 0.5 * np.asarray(a) + 0.5 * np.eye(a.shape[-1])
    want = (a / a.sum(-1, keepdims=True)) @ want
  np.testing.assert_allclose(np.asarray(attention.rollout_matrix(maps)), want, atol=1e-5)
  ro = attention.attention_rollout(module, variables, x)
  # Pooled rows of a row-stochastic matrix: the map over all tokens sums to 1, SEPs included.
  seps = ro.tokens.sum((1, 2))
  assert np.all(seps < 1.0) and np.all(seps > 0.5)


def test_ecg_fm_maps_time_frames_onto_every_lead_and_cnns_are_refused():
  module = models.build_model("ecg_fm_encoder", "mu")
  x = np.random.default_rng(2).normal(size=(2, 12, 750)).astype(np.float32)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), jnp.asarray(x))
  ro = attention.attention_rollout(module, variables, x)
  assert ro.tokens.ndim == 2 and ro.layers == module.depth
  np.testing.assert_allclose(ro.tokens.sum(1), 1.0, rtol=1e-5)  # every frame is pooled
  assert ro.attributions.shape == x.shape
  np.testing.assert_array_equal(ro.attributions[:, 0], ro.attributions[:, 11])
  cnn = models.build_model("resnet1d", "mu", num_classes=2)
  cv = cnn.init(jax.random.PRNGKey(0), jnp.zeros((1, 12, 500)))
  with pytest.raises(attention.NoAttentionError, match="has no attention layers"):
    attention.attention_rollout(cnn, cv, np.zeros((1, 12, 500), np.float32))


def test_explain_cli_attention_on_an_encoder_export(tmp_path):
  """finetune/explain.py --method attention on an ST-MEM encoder export (no task head; a lead
  subset feeds the lead table): tokens per lead x patch, one 12-lead figure per record."""
  from ecgjax import export
  from ecgjax.data import transforms
  names = ("I", "II", "V2")
  module = models.build_model("st_mem_encoder", "mu")
  params = jax.jit(module.init)(jax.random.PRNGKey(0),
                                np.zeros((1, 12, 2250), np.float32))["params"]
  pp = transforms.Preprocessing(fs=250, samples=2250, leads=names, bandpass=None,
                                standardize="global")
  exp = export.save_export(
      str(tmp_path / "export"), params,
      {"model": "st_mem", "variant": "mu", "module": "st_mem_encoder", "overrides": {},
       "embedding": {"dim": 64, "pooling": "mean_patch_tokens_then_norm"}}, pp.to_dict())
  out = tmp_path / "att"
  proc = subprocess.run(
      [sys.executable, "finetune/explain.py", "--export", exp, "--data",
       "synthetic:2?seed=3", "--method", "attention", "--out", str(out)],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "class-free" in proc.stdout
  z = np.load(out / "attention.npz")
  assert z["tokens"].shape == (2, len(names), 30)
  assert z["attributions"].shape == (2, len(names), 2250) and "p" not in z
  assert len(list(out.glob("*.png"))) == 2
