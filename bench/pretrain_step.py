"""Times the real jitted pretraining step (compile excluded) and prints a table + one JSON line.

  python bench/pretrain_step.py --model st_mem --variant B/75 --batch 8 --steps 5
  python bench/pretrain_step.py --model st_mem --variant B/75 --batch 32 --dtype bfloat16
  python bench/pretrain_step.py --model st_mem --variant B/75 --batch 8 --remat block

The batch is random data of the training shape, so the number is the step alone (the
input pipeline has its own benchmark). The JSON line is last, for scripts.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

_MODEL = flags.DEFINE_enum("model", "st_mem", ["st_mem"], "model family")
_VARIANT = flags.DEFINE_string("variant", "B/75", "size variant")
_BATCH = flags.DEFINE_integer("batch", 8, "global batch size")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps after the compiling one")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "block", "dots_saveable", "full"],
                           "config.remat: what the backward pass recomputes")
_SHARDING = flags.DEFINE_enum("param_sharding", "replicated", ["replicated", "fsdp"],
                              "parameter sharding over the devices")

_CONFIGS = {"st_mem": "stmem"}


def main(argv):
  del argv
  import importlib

  import jax
  import numpy as np

  from ecgjax import objectives
  from ecgjax.train import mesh as mesh_lib, step as step_lib

  config = importlib.import_module(f"configs.{_CONFIGS[_MODEL.value]}").get_config(
      f"variant={_VARIANT.value}")
  config.batch_size = _BATCH.value
  config.dtype = _DTYPE.value
  config.param_sharding = _SHARDING.value
  config.remat = _REMAT.value
  mesh = mesh_lib.make_mesh()
  objective = objectives.build(config)
  rng = np.random.default_rng(0)
  shape = (config.batch_size, len(config.input.leads), config.input.samples)
  host_batch = {"signal": rng.standard_normal(shape).astype(np.float32),
                "lead_mask": np.ones(shape[:2], np.float32)}
  # The loop's own construction, so the number is the step a real run executes.
  training = step_lib.build_training(config, objective, mesh, host_batch)
  n_params, _ = training.params
  state, train_step = training.init(), training.train_step
  batch = mesh_lib.to_global(host_batch, mesh)

  t0 = time.perf_counter()
  state, metrics = train_step(state, batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = train_step(state, batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  # XLA's own account of the step's buffers (what remat changes), beside the process's RSS.
  temp_mib = None
  if hasattr(train_step, "lower"):
    try:
      analysis = train_step.lower(state, batch).compile().memory_analysis()
      temp_mib = round(analysis.temp_size_in_bytes / 2**20, 1)
    except Exception:  # pylint: disable=broad-except  (a backend without the analysis)
      temp_mib = None
  result = {
      "model": _MODEL.value, "variant": _VARIANT.value, "batch": config.batch_size,
      "dtype": config.dtype, "param_sharding": config.param_sharding, "remat": config.remat,
      "xla_temp_mib": temp_mib,
      "samples_per_s": round(config.batch_size / med, 3),
      "median_step_s": round(med, 4), "min_step_s": round(min(times), 4),
      "compile_s": round(compile_s, 2),
      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "params": n_params, "devices": jax.device_count(), "backend": jax.default_backend(),
      "device_kind": jax.devices()[0].device_kind, "loss": float(metrics["loss"]),
  }
  width = max(len(k) for k in result)
  print("-" * (width + 24))
  for k, v in result.items():
    print(f"{k:<{width}}  {v}")
  print("-" * (width + 24))
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
