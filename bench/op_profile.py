"""Where a train step's time goes, per kind of XLA op: a table from a JAX profiler trace.

  python bench/op_profile.py --model st_mem --variant B/75 --batch 8 --steps 2

Builds the same step as bench/pretrain_step.py (the loop's own construction, random data of the
training shape), runs it twice to warm up, traces `--steps` more with `jax.profiler`, and sums
the trace's op events by kind (the HLO op name without its number: `ynn_fusion` are the dots
XLA:CPU hands to YNNPACK with what it fused into them, `multiply_add_fusion` and the like are
elementwise loops, `transpose_copy_fusion` and `copy_bitcast_fusion` layout copies). The
`--top` single ops are listed with the source op XLA recorded for them, so a costly copy can be
traced back to the model code. The last line is one JSON object of the per-kind milliseconds.

Check the total against the step time (bench/pretrain_step.py): for the ViT steps the two agree
(ST-MEM B/75: 2.19 s of ops, 2.1 s steps), for the convolution-heavy fine-tuning steps the trace
held far less than the step (net1d: 0.38 of 1.5 s), so work XLA:CPU runs outside its traced
thunks is missing there and those tables are not a breakdown.
"""

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pretrain_step = None  # bench/pretrain_step.py, imported by __main__ (its flags: --model, ...)

_TOP = flags.DEFINE_integer("top", 8, "single ops to list with their source op")
_TRACE_DIR = flags.DEFINE_string("trace_dir", "", "where the trace goes (default: a temp dir)")
# Events that are the executor's own bookkeeping or the Python calls around the step.
_NOT_OPS = ("ThunkExecutor", "SlinkyThreadPool", "$", "PjitFunction", "CommonPjRt",
            "ParseArguments", "Handle inputs", "end: ")


def op_table(trace_file: str, steps: int) -> tuple[dict[str, float], list[tuple]]:
  """({op kind: ms per step}, [(ms, op name, its hlo_op metadata)] of the single ops)."""
  events = json.load(gzip.open(trace_file))["traceEvents"]
  kinds: collections.Counter = collections.Counter()
  single = []
  for e in events:
    if e.get("ph") != "X" or "dur" not in e or e["name"].startswith(_NOT_OPS):
      continue
    kinds[re.sub(r"\.\d+$", "", e["name"])] += e["dur"] / 1e3 / steps
    single.append((e["dur"] / 1e3, e["name"], (e.get("args") or {}).get("hlo_op", "")))
  return dict(kinds.most_common()), sorted(single, reverse=True)


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax.train import mesh as mesh_lib, step as step_lib  # pylint: disable=g-import-not-at-top
  model = pretrain_step._MODEL.value  # pylint: disable=protected-access
  variant = pretrain_step._VARIANT.value or pretrain_step.DEFAULT_VARIANT[model]  # pylint: disable=protected-access
  steps = pretrain_step._STEPS.value  # pylint: disable=protected-access
  config, objective, host = pretrain_step._build(model, variant, pretrain_step._BATCH.value)  # pylint: disable=protected-access
  mesh = mesh_lib.make_mesh()
  training = step_lib.build_training(config, objective, mesh, host)
  state, train_step = training.init(), training.train_step
  batch = mesh_lib.to_global(host, mesh)
  for _ in range(2):
    state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
  out = _TRACE_DIR.value or tempfile.mkdtemp(prefix="ecgjax-profile-")
  jax.profiler.start_trace(out)
  for _ in range(steps):
    state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
  jax.profiler.stop_trace()
  trace = sorted(glob.glob(os.path.join(out, "**", "*.trace.json.gz"), recursive=True))[-1]
  kinds, single = op_table(trace, steps)
  total = sum(kinds.values())
  print(f"{model} {variant} batch {pretrain_step._BATCH.value} {config.dtype}: "  # pylint: disable=protected-access
        f"{total:.0f} ms of ops per step ({jax.devices()[0].device_kind})")
  print(f"{'ms/step':>9} {'share':>6}  op kind")
  for name, ms in list(kinds.items())[:20]:
    print(f"{ms:9.1f} {100 * ms / total:5.1f}%  {name}")
  print(f"\nlargest single ops (trace: {trace}):")
  for ms, name, _ in single[:_TOP.value]:
    print(f"{ms:9.2f} ms  {name}")
  print(json.dumps({"model": model, "variant": variant, "total_ms": round(total, 1),
                    "ms_per_kind": {k: round(v, 2) for k, v in kinds.items()}}))


if __name__ == "__main__":
  import pretrain_step  # noqa: E402,F811  (defines --model, --variant, --batch, --steps, ...)
  app.run(main)
