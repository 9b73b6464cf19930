"""Checkpoint files written the way the reference TRAINERS write them convert: ECGFounder's
util.save_checkpoint (optimizer, scheduler, a NumPy-float metric beside the weights), fairseq's
trainer (args/cfg/model/criterion/optimizer_history/task_state/extra_state with tensor meters
and an EMA copy, last_optimizer_state, fp16 weights), DataParallel / Lightning prefixes. The
weights are found by structure, optimizer moments are never taken for them, and everything
beside the weights is listed in the report."""

import numpy as np
import pytest

from ecgjax import interop
from ecgjax.interop import state as state_lib


def _torch():
  return pytest.importorskip(
      "torch", reason="writing .pth files needs torch (pip install 'ecgjax[torch]'; CI has it)")


def _refs():
  _torch()
  from tests import interop_refs  # pylint: disable=g-import-not-at-top
  return interop_refs


def _adam_state(torch, module):
  """The optimizer and scheduler state dicts after one real Adam step (moments per param)."""
  opt = torch.optim.Adam(module.parameters(), lr=1e-3)
  sched = torch.optim.lr_scheduler.StepLR(opt, 10)
  loss = sum((p.float() ** 2).sum() for p in module.parameters())
  loss.backward()
  opt.step()
  sched.step()
  opt.zero_grad()
  return opt.state_dict(), sched.state_dict()


def test_ecgfounder_save_checkpoint_layout_converts(tmp_path):
  torch, refs = _torch(), _refs()
  torch.manual_seed(0)
  net = refs.randomize(refs.Net1D(), seed=1)
  optimizer, scheduler = _adam_state(torch, net)
  path = tmp_path / "checkpoint.pth"
  # util.save_checkpoint's dict, val_auroc a NumPy float (it has a .shape: the old detection
  # took the whole dict for the state dict and never unwrapped).
  torch.save({"epoch": 7, "step": 1234, "state_dict": net.state_dict(), "optimizer": optimizer,
              "scheduler": scheduler, "val_auroc": np.float64(0.8731)}, path)
  conv = interop.convert("ecgfounder", str(path), None)
  rep = conv.report
  assert rep.ok and rep.weights_at == "state_dict"
  ignored = "\n".join(rep.beside_weights)
  for key in ("epoch", "step", "optimizer", "scheduler", "val_auroc"):
    assert key in ignored
  assert "scalar 0.8731" in ignored and "optimizer state" in ignored
  want = {k: v.numpy() for k, v in net.state_dict().items()}
  np.testing.assert_array_equal(np.asarray(conv.params["stem"]["conv"]["kernel"]),
                                want["first_conv.conv.weight"].transpose(2, 1, 0))
  assert "ignored, not weights: 5" in rep.summary()


def test_fairseq_trainer_layout_converts_with_fp16_weights(tmp_path):
  torch, refs = _torch(), _refs()
  torch.manual_seed(0)
  net = refs.randomize(refs.ECGFM(), seed=1)
  optimizer, _ = _adam_state(torch, net)
  fp16 = {k: v.half() for k, v in net.state_dict().items()}
  path = tmp_path / "checkpoint_best.pt"
  torch.save({
      "args": None,
      "cfg": {"model": {"encoder_attention_heads": 2, "layer_norm_first": False},
              "optimization": {"lr": [5e-5]}},
      "model": fp16,
      "criterion": {},
      "optimizer_history": [{"criterion_name": "Wav2Vec2Criterion", "optimizer_name": "Adam",
                             "lr_scheduler_state": {"best": 1.23}, "num_updates": 500}],
      "task_state": {},
      "extra_state": {"metrics": {"train": [("loss", {"val": torch.tensor(2.5), "sum": 10.0,
                                                      "count": 4})]},
                      "train_iterator": {"epoch": 3}, "previous_training_time": 12.5,
                      "best": np.float32(1.5),
                      # fairseq's EMA copy: another state dict, never preferred to 'model'.
                      "ema": {k: v * 0 for k, v in fp16.items()}},
      "last_optimizer_state": optimizer,
  }, path)
  conv = interop.convert("ecg-fm", str(path), None)
  rep = conv.report
  assert rep.ok and rep.weights_at == "model"
  ignored = "\n".join(rep.beside_weights)
  for key in ("args", "cfg", "criterion", "optimizer_history", "task_state", "extra_state",
              "last_optimizer_state"):
    assert key in ignored
  # The weights are the model's (fp16 widened), not the EMA's zeros.
  k = np.asarray(conv.params["post_extract_proj"]["kernel"])
  np.testing.assert_array_equal(k, fp16["post_extract_proj.weight"].float().numpy().T)
  assert np.abs(k).sum() > 0


def test_structural_detection_rules():
  w = np.ones((3, 2), np.float32)
  # Optimizer moments (int-keyed state, or a mapping of moment names) are never weights.
  opt = {"state": {0: {"step": np.array(1.0), "exp_avg": w, "exp_avg_sq": w}},
         "param_groups": [{"lr": 1e-3, "params": [0]}]}
  with pytest.raises(ValueError, match="no state dict"):
    state_lib.unwrap_checkpoint({"optimizer": opt, "epoch": 1})
  assert not state_lib.is_state_dict({"exp_avg": w, "exp_avg_sq": w})
  # Scalars alone (metrics) are no state dict; 0-d arrays inside one are kept.
  assert not state_lib.is_state_dict({"val_auroc": np.float64(0.5)})
  state, path, ignored = state_lib.unwrap_checkpoint(
      {"model": {"a.weight": w, "bn.num_batches_tracked": np.array(3)}, "epoch": 2})
  assert path == ["model"] and set(state) == {"a.weight", "bn.num_batches_tracked"}
  assert ignored == ["epoch (scalar 2)"]
  # Whole-dict prefixes: DataParallel's module., Lightning's model., torch.compile's.
  for prefix in ("module.", "model.", "_orig_mod.", "module.model."):
    state, _, _ = state_lib.unwrap_checkpoint({"state_dict": {f"{prefix}a": w,
                                                              f"{prefix}b": w}})
    assert set(state) == {"a", "b"}, prefix
  # A plain state dict is its own weights; a non-array value inside it is listed.
  state, path, ignored = state_lib.unwrap_checkpoint({"a": w, "note": "x"})
  assert path == [] and set(state) == {"a"} and ignored == ["note (scalar 'x')"]
  # The preferred nesting wins over another state dict deeper or later.
  state, path, _ = state_lib.unwrap_checkpoint({"extra": {"ema": {"a": w * 0}},
                                                "state_dict": {"a": w}})
  assert path == ["state_dict"] and state["a"].sum() == w.sum()
