"""bfloat16 compute against float32: the same run's loss curves, step by step.

  python bench/bf16_curve.py                      # ST-MEM mu, 300 steps, batch 16 (CPU, ~5 min)
  python bench/bf16_curve.py --config configs/hybrid.py:variant=mu,preset=hybrid --steps 200

Both runs share the config, the seed and so the data order and masks; only config.dtype (the
compute dtype) differs. Parameters and optimizer state stay float32 in both (checked on the
final state). Prints the loss of both at a few steps, the largest relative gap of the curves
smoothed over a window, and one JSON line.
"""

import json
import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_CONFIG = flags.DEFINE_string("config", "configs/stmem.py:variant=mu,runlocal", "config file")
_STEPS = flags.DEFINE_integer("steps", 300, "training steps of each run")
_BATCH = flags.DEFINE_integer("batch", 16, "global batch size")
_WINDOW = flags.DEFINE_integer("window", 20, "moving-average window of the compared curves")


def _run(config_arg: str, dtype: str, workdir: str) -> tuple[list[float], set[str]]:
  import importlib.util  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax.train import loop  # pylint: disable=g-import-not-at-top
  path, _, arg = config_arg.partition(":")
  spec = importlib.util.spec_from_file_location("bench_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config(arg)
  c.total_steps, c.batch_size, c.dtype = _STEPS.value, _BATCH.value, dtype
  c.warmup_steps = max(1, _STEPS.value // 10)
  c.log_every_steps, c.vis_every_steps, c.export_at_end = 1, 0, False
  c.checkpoint_every_steps = _STEPS.value
  loop.train(c, workdir, devices=jax.devices()[:1])
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    losses = {r["step"]: r["loss"] for r in map(json.loads, f)}
  # What the run keeps: the train state the loop builds for this config (optax keeps dtypes).
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ecgjax import objectives  # pylint: disable=g-import-not-at-top
  from ecgjax.data import batch as batch_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.train import mesh as mesh_lib, step as step_lib  # pylint: disable=g-import-not-at-top
  example = batch_lib.example_batch({"B": c.batch_size, "L": len(c.input.leads),
                                     "T": c.input.samples, "K": 1}, "train")
  training = step_lib.build_training(c, objectives.build(c),
                                     mesh_lib.make_mesh(jax.devices()[:1]), example)
  state = jax.eval_shape(training.init)
  dtypes = {str(x.dtype) for x in jax.tree.leaves(state)
            if np.issubdtype(x.dtype, np.floating)}
  return [losses[s] for s in sorted(losses)], dtypes


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as tmp:
    f32, d32 = _run(_CONFIG.value, "float32", os.path.join(tmp, "f32"))
    bf16, d16 = _run(_CONFIG.value, "bfloat16", os.path.join(tmp, "bf16"))
  n, w = min(len(f32), len(bf16)), _WINDOW.value
  a, b = np.asarray(f32[:n]), np.asarray(bf16[:n])
  smooth = lambda x: np.convolve(x, np.ones(w) / w, mode="valid")  # noqa: E731
  gap = np.abs(smooth(b) - smooth(a)) / np.abs(smooth(a))
  print(f"{'step':>6} {'float32':>10} {'bfloat16':>10} {'rel gap':>8}")
  for s in sorted({1, n // 4, n // 2, 3 * n // 4, n}):
    print(f"{s:>6} {a[s - 1]:>10.4f} {b[s - 1]:>10.4f} {abs(b[s - 1] - a[s - 1]) / abs(a[s - 1]):>8.4f}")
  result = {"config": _CONFIG.value, "steps": n, "batch": _BATCH.value, "window": w,
            "max_rel_gap_smoothed": round(float(gap.max()), 4),
            "mean_rel_gap_smoothed": round(float(gap.mean()), 4),
            "final_f32": round(float(a[-w:].mean()), 4),
            "final_bf16": round(float(b[-w:].mean()), 4),
            "state_dtypes_f32_run": sorted(d32), "state_dtypes_bf16_run": sorted(d16)}
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
