"""Continue pretraining from a published checkpoint (`config.init_from`): the WHOLE pretraining
model is imported (ST-MEM's MAE decoder and mask token; ECG-FM's quantiser, project_q,
final_proj, mask_emb). The first step's loss equals the reference's on a fixed batch with given
masking noise (ST-MEM: the official golden outputs) or given span masks, negatives and codes
(ECG-FM: a tiny torch model written from SPEC), to 1e-5; 20 more steps lower it; the pretrain
loop reads the file, reports every key, and refuses what does not fit."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ecgjax import data
from ecgjax.interop import conversion
from ecgjax.interop import pretraining
from ecgjax.objectives import masked_autoencoder, wav2vec2
from ecgjax.objectives.mae import norm_pix_loss
from ecgjax.train import mesh as mesh_lib
from ecgjax.train import step as step_lib
from tests.helpers import rel_err

TINY_ST_MEM = dict(width=128, depth=2, num_heads=2, mlp_dim=512, decoder_width=128,
                   decoder_depth=1, decoder_heads=2, decoder_mlp_dim=512)
NO_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                  dropout_input=0.0, dropout_features=0.0)


def _config(objective: str, steps: int = 20, base_lr: float = 1e-3):
  from configs import ecgfm, stmem  # pylint: disable=g-import-not-at-top
  c = (stmem if objective == "mae" else ecgfm).get_config("variant=mu,runlocal")
  c.total_steps, c.warmup_steps, c.base_lr = steps, 0, base_lr
  return c


def _train(objective, config, params, batch, steps: int) -> list[float]:
  """Losses of `steps` engine steps (the production jitted step) from `params`."""
  mesh = mesh_lib.make_mesh(jax.devices()[:1])
  training = step_lib.build_training(config, objective, mesh, batch)
  params = jax.tree.map(lambda v, t: jnp.asarray(v, t.dtype), params,
                        training.abstract_state["params"])
  state = training.with_params(training.init(), params)
  losses = []
  for _ in range(steps):
    state, metrics = training.train_step(state, mesh_lib.to_global(batch, mesh))
    losses.append(float(jax.device_get(metrics["loss"])))
  return losses


def test_st_mem_full_model_continues_from_the_official_weights(shared_dir, tmp_path):
  z = np.load(shared_dir / "golden" / "st_mem_tiny.npz")
  golden = {k: z[k] for k in z.files}
  state = {k.removeprefix("param/"): v for k, v in golden.items() if k.startswith("param/")}
  obj = masked_autoencoder.MaskedAutoencoder("mu", leads=tuple(data.LEADS_12), samples=2250,
                                            model_overrides=TINY_ST_MEM)
  batch = {"signal": golden["input"], "index": np.arange(2, dtype=np.int32)}
  template = jax.eval_shape(lambda: obj.init(jax.random.PRNGKey(0), batch)[0])
  # The file as a training script saves it, with the epoch and optimizer beside the weights.
  params, report = pretraining.pretraining_params(
      "", {"model": state, "epoch": 799, "optimizer": {"state": {}, "param_groups": []}},
      template)
  assert report.ok and report.converted == len(state) and not report.unexpected
  assert {"mask_embedding", "decoder_head", "decoder_block_0"} <= set(params)
  # The first step's loss: the official model's, on its input and masking noise.
  pred, aux = jax.jit(obj.model.apply)({"params": params}, golden["input"],
                                       golden["mask_noise"], lead_idx=obj.lead_idx)
  loss = norm_pix_loss(golden["input"], pred, aux["mask"], obj.model.patch_size)
  err = rel_err(loss, golden["loss"])
  print(f"ST-MEM continued from the official weights: first loss rel err {err:.1e}")
  assert err < 1e-5
  # 20 more steps of the engine's own step lower it (its own masking noise from here on).
  losses = _train(obj, _config("mae"), params, batch, 21)
  assert np.mean(losses[-5:]) < losses[0], losses

  # The same through a file read the safe way (torch needed for that part only).
  torch = pytest.importorskip("torch", reason="writing a .pth needs torch (CI has it)")
  path = tmp_path / "st_mem_pretrain.pth"
  torch.save({"model": {k: torch.from_numpy(v) for k, v in state.items()}, "epoch": 799}, path)
  again, report = pretraining.load(str(path), "", template, "mae")
  assert report.ok and "sha256" in report.notes[-1]
  jax.tree.map(np.testing.assert_array_equal, again, params)
  with pytest.raises(ValueError, match="continues with objective 'mae'"):
    pretraining.load(str(path), "", template, "wav2vec2")


def _torch_ecg_fm(seed: int = 1):
  torch = pytest.importorskip("torch", reason="the torch reference needs torch (CI has it)")
  from tests import interop_refs  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  return torch, interop_refs, interop_refs.randomize(interop_refs.ECGFM(latent_vars=320),
                                                     seed=seed)


def test_ecg_fm_whole_model_first_step_equals_torch(tmp_path):
  torch, refs, net = _torch_ecg_fm()
  state = {k: v.detach().numpy() for k, v in net.state_dict().items()}
  cfg = {"model": {"encoder_attention_heads": 2, "latent_groups": 2, "latent_vars": 320}}
  obj = wav2vec2.Wav2Vec2("mu", samples=5000, views=2, model_overrides=NO_DROPOUT)
  x = data.open_source("synthetic:4?seed=3&fs=500&seconds=10")
  pp = data.transforms.preset("ecg_fm")
  signal = np.stack([pp.prepare(x[i])[0][:, :5000] for i in range(4)])
  batch = {"signal": signal, "index": np.arange(4, dtype=np.int32),
           "patient": np.arange(4, dtype=np.int32)}
  template = jax.eval_shape(lambda: obj.init(jax.random.PRNGKey(0), batch)[0])
  params, report = pretraining.pretraining_params(
      "ecg-fm", {"cfg": cfg, "model": state, "optimizer_history": []}, template)
  assert report.ok and not report.unexpected and report.converted == len(state)
  assert {"quantizer", "project_q", "final_proj"} <= set(params)
  assert "mask_emb" in params["encoder"]

  rng, step = jax.random.PRNGKey(7), 0
  loss, aux = jax.jit(obj.loss)(params, {}, batch, rng, step)
  d = obj.draws(batch, rng, step)
  out, _ = obj.model.apply({"params": params}, d["x"], d["mask"], d["tau"], train=True,
                           rngs=d["rngs"])
  with torch.no_grad():
    want = refs.wav2vec2_loss(
        net, torch.from_numpy(np.array(d["x"])), torch.from_numpy(np.array(d["mask"])),
        torch.from_numpy(np.array(d["negs"])), torch.from_numpy(np.array(out["codes"])))
  err = rel_err(loss, want[0].item())
  errs = {k: rel_err(aux.terms[k], w.item()) for k, w in
          zip(("wav2vec2", "diversity", "feature_pen"), want[1:])}
  print(f"ECG-FM continued from a torch model: first loss rel err {err:.1e}, terms {errs}")
  assert err < 1e-5 and max(errs.values()) < 1e-5
  losses = _train(obj, _config("wav2vec2", base_lr=5e-3), params, batch, 21)
  assert np.mean(losses[-5:]) < losses[0], losses


def test_pretrain_loop_reads_init_from_and_reports_every_key(tmp_path):
  torch, refs, net = _torch_ecg_fm(seed=2)
  path = tmp_path / "ecg_fm_pretrain.pt"
  torch.save({"cfg": {"model": {"encoder_attention_heads": 2}}, "model": net.state_dict(),
              "optimizer_history": [{"num_updates": 10}], "extra_state": {"epoch": 1}}, path)
  from ecgjax import export as export_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.train import loop  # pylint: disable=g-import-not-at-top
  c = _config("wav2vec2", steps=0)
  c.recipe = "wav2vec2"
  c.init_from = str(path)
  c.data = "synthetic:16?seed=0&fs=500&seconds=10"
  workdir = str(tmp_path / "run")
  loop.train(c, workdir, devices=jax.devices()[:1])
  report = json.load(open(os.path.join(workdir, pretraining.REPORT_FILE)))
  assert report["ok"] and report["weights_at"] == "model" and not report["missing"]
  assert any("optimizer_history" in b for b in report["beside_weights"])
  export = export_lib.load_export(os.path.join(workdir, "export"))
  want = net.state_dict()["feature_extractor.conv_layers.0.0.weight"].numpy()
  np.testing.assert_array_equal(export.params["feature_extractor"]["conv_0"]["kernel"],
                                want.transpose(2, 1, 0))

  # A checkpoint of another size: every mismatching key named, nothing trained.
  big = refs.ECGFM(width=96, latent_vars=320)
  bad = tmp_path / "other_size.pt"
  torch.save({"model": big.state_dict()}, bad)
  c.init_from = str(bad)
  with pytest.raises(conversion.ConversionError, match="post_extract_proj.weight: checkpoint"):
    loop.train(c, str(tmp_path / "bad_run"), devices=jax.devices()[:1])
  assert not os.path.exists(os.path.join(tmp_path, "bad_run", "export"))
  # An encoder-only file is refused with what to do instead.
  enc_only = {k: v for k, v in net.state_dict().items()
              if not k.startswith(("quantizer", "project_q", "final_proj", "mask_emb"))}
  with pytest.raises(conversion.ConversionError, match="MISSING") as e:
    pretraining.pretraining_params("ecg-fm", {"model": {k: v.numpy() for k, v in
                                                        enc_only.items()}},
                                   jax.eval_shape(lambda: wav2vec2.Wav2Vec2(
                                       "mu", samples=5000, views=2).init(
                                           jax.random.PRNGKey(0),
                                           {"signal": np.zeros((1, 12, 5000))})[0]))
  assert "quantizer.vars" in str(e.value)
