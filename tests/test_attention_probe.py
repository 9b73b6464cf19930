"""The attention-pooling probe reads what a mean over tokens washes out."""

import numpy as np

from ecgjax.eval import attention_probe
from ecgjax.eval import probes


def _data(n, seed, tokens=24, dim=16):
  """The label is the sign of feature 0 of ONE token at a random position (its position marked
  by feature 1); every other token is noise. Mean pooling divides the signal by `tokens`."""
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, tokens, dim)).astype(np.float32)
  y = rng.integers(0, 2, n)
  where = rng.integers(0, tokens, n)
  x[np.arange(n), where, 0] = np.where(y == 1, 2.0, -2.0)
  x[:, :, 1] = -1.0
  x[np.arange(n), where, 1] = 3.0
  return x, y[:, None].astype(np.float32)


def test_attention_pooling_beats_the_linear_probe_on_a_single_informative_token():
  xtr, ytr = _data(600, 0)
  xva, yva = _data(200, 1)
  xte, yte = _data(300, 2)
  res = attention_probe.fit_predict_attention(xtr, ytr, xva, yva, xte, epochs=25, seed=0,
                                              batch_size=64, patience=6)
  att = attention_probe.macro_auroc(yte, res.p_test)
  lin = attention_probe.macro_auroc(
      yte, probes.fit_predict_logreg(xtr.mean(1), ytr, xte.mean(1)))
  assert att > 0.95 and att > lin + 0.1, (att, lin)
  assert 0 <= res.best_epoch < len(res.validation_curve) <= 25
  assert res.best_validation_auroc == max(res.validation_curve)


def test_masked_tokens_are_ignored():
  """Padding tokens (mask 0) carrying a decoy never reach the prediction."""
  x, y = _data(64, 3, tokens=8)
  mask = np.ones(x.shape[:2], bool)
  mask[:, -2:] = False
  res = attention_probe.fit_predict_attention(x, y, x, y, x, mask_train=mask, mask_val=mask,
                                              mask_test=mask, epochs=2, seed=1)
  decoy = x.copy()
  decoy[:, -2:] = 1e3
  res2 = attention_probe.fit_predict_attention(x, y, x, y, decoy, mask_train=mask,
                                               mask_val=mask, mask_test=mask, epochs=2, seed=1)
  np.testing.assert_allclose(res.p_test, res2.p_test, atol=1e-6)


def test_embed_source_writes_token_sequences_of_every_crop(tmp_path):
  """`finetune/embed.py --tokens`' library path: the crops' tokens one after the other,
  float16, masked per view, and the same pooled embeddings as without tokens; the NPZ round
  trip keeps them."""
  import sys
  sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
  from test_probe import _save_mu_export  # pylint: disable=g-import-not-at-top
  from ecgjax import data
  from ecgjax import eval as eval_lib
  from ecgjax import export as export_lib
  exp = export_lib.load_export(_save_mu_export(tmp_path / "export"))
  source = data.open_source("synthetic:5?seed=2")
  plain = eval_lib.embed_source(exp, source, n_crops=2, progress=False)
  d = eval_lib.embed_source(exp, source, n_crops=2, progress=False, tokens=True)
  np.testing.assert_allclose(d["embeddings"], plain["embeddings"], rtol=1e-6, atol=1e-6)
  assert d["tokens"].shape == (5, 2 * 12 * 32, 64) and d["tokens"].dtype == np.float16
  assert d["token_mask"].shape == (5, 2 * 12 * 32) and d["token_mask"].all()
  path = eval_lib.save_embeddings(str(tmp_path / "e.npz"), d)
  back = eval_lib.load_embeddings(path)
  np.testing.assert_array_equal(back["tokens"], d["tokens"])
  assert "tokens" not in eval_lib.load_embeddings(
      eval_lib.save_embeddings(str(tmp_path / "p.npz"), plain))
