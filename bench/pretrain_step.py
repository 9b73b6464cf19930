"""Times the real jitted train step (compile excluded): a table, then one JSON line per run.

  python bench/pretrain_step.py --model st_mem --variant B/75 --batch 8 --steps 5
  python bench/pretrain_step.py --model st_mem --variant B/75 --batch 32 --dtype bfloat16
  python bench/pretrain_step.py --model st_mem --variant B/75 --batch 8 --remat block
  python bench/pretrain_step.py --model ecg_fm --variant base --sweep 8,16,32
  python bench/pretrain_step.py --model net1d --variant ecgfounder --batch 16

Models: st_mem (the MAE, configs/stmem.py), hybrid (configs/hybrid.py preset=hybrid), ecg_fm
(configs/ecgfm.py, wav2vec 2.0 + CMSC + RLM), and the supervised fine-tuning step of net1d,
resnet1d and resnet2d (configs/finetune.py, 5 labels). The batch is random data of the training
shape, so the number is the step alone (the input pipeline has its own benchmark).

FLOPs per step are XLA's cost analysis of the compiled step; TFLOP/s = FLOPs / median step; MFU
= TFLOP/s / the device's peak at the compute dtype: a table of published dense peaks for the
common GPUs and TPUs, and on a CPU a matmul's rate measured once in this process at the run's
dtype (float32, or bfloat16 summed in float32 as layers.Dense runs it: on a CPU with a bf16
matrix unit, AMX, that rate is several times the float32 one); MFU against what this
machine's matmul reaches, not a datasheet. The last line of each run is one
JSON object (`--sweep`: one per batch size) with samples_per_s, peak_rss_mib (whole-process
ru_maxrss), flops_per_step, tflops_per_s, mfu and device.
"""

import json
import os
import resource
import statistics
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ecgjax.train import host_memory  # noqa: E402  (stdlib only; before JAX starts threads)

host_memory.limit_arenas()  # as the programs do (ecgjax.apps)

MODELS = ("st_mem", "hybrid", "ecg_fm", "net1d", "resnet1d", "resnet2d")
_MODEL = flags.DEFINE_enum("model", "st_mem", list(MODELS), "model family")
_VARIANT = flags.DEFINE_string("variant", "", "size variant (default: the family's published "
                               "size: B/75, base, ecgfounder, resnet1d50, resnet2d50_sa)")
_BATCH = flags.DEFINE_integer("batch", 8, "global batch size")
_SWEEP = flags.DEFINE_list("sweep", [], "batch sizes to run one after another (one JSON line "
                           "each); replaces --batch")
_STEPS = flags.DEFINE_integer("steps", 5, "timed steps after the compiling one")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_REMAT = flags.DEFINE_enum("remat", "none", ["none", "block", "dots_saveable", "full"],
                           "config.remat: what the backward pass recomputes")
_SHARDING = flags.DEFINE_enum("param_sharding", "replicated", ["replicated", "fsdp"],
                              "parameter sharding over the devices")

DEFAULT_VARIANT = {"st_mem": "B/75", "hybrid": "B/75", "ecg_fm": "base", "net1d": "ecgfounder",
                   "resnet1d": "resnet1d50", "resnet2d": "resnet2d50_sa"}
# Dense peak TFLOP/s per device (vendor datasheets, without sparsity): {kind substring: (bf16,
# fp32)}. fp32 on NVIDIA is the non-tensor-core rate; TPUs run fp32 matmuls in bf16 passes, so
# their fp32 entry is the bf16 peak / 3 (the default precision's three passes).
PEAKS = {
    "H200": (989.0, 67.0), "H100": (989.0, 67.0), "A100": (312.0, 19.5),
    "L40S": (362.0, 91.6), "L4": (121.0, 30.3), "A10G": (70.0, 31.2), "V100": (125.0, 15.7),
    "TPU v5p": (459.0, 153.0), "TPU v5 lite": (197.0, 65.7), "TPU v5e": (197.0, 65.7),
    "TPU v4": (275.0, 91.7), "TPU v6": (918.0, 306.0),
}
N_LABELS = 5


def device_peak(jax, dtype: str) -> tuple[float, str]:
  """(peak TFLOP/s of one device at `dtype`, where the number comes from)."""
  dev = jax.devices()[0]
  if dev.platform == "cpu":
    if dtype == "bfloat16":  # as layers.Dense runs it: bf16 inputs, products summed in fp32
      return (cpu_matmul_peak(jax, dtype=dtype),
              "measured: bfloat16 2048^3 matmul summed in float32 on this CPU")
    return cpu_matmul_peak(jax), "measured: float32 2048^3 matmul on this CPU"
  for name, (bf16, fp32) in PEAKS.items():
    if name.lower() in dev.device_kind.lower():
      return (bf16 if dtype == "bfloat16" else fp32), f"datasheet {name}"
  return float("nan"), f"unknown device kind {dev.device_kind!r}: no peak, no MFU"


def cpu_matmul_peak(jax, n: int = 2048, dtype: str = "float32") -> float:
  """TFLOP/s of a jitted n^3 matmul (best of 5), this CPU's practical peak at `dtype`."""
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  a = jnp.ones((n, n), dtype)
  f = jax.jit(lambda a: jnp.dot(a, a, preferred_element_type=jnp.float32))
  f(a).block_until_ready()
  best = float("inf")
  for _ in range(5):
    t0 = time.perf_counter()
    f(a).block_until_ready()
    best = min(best, time.perf_counter() - t0)
  return 2 * n ** 3 / best / 1e12


def _build(model: str, variant: str, batch: int):
  """(config, objective, host batch) of the train step to time."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ecgjax import objectives  # pylint: disable=g-import-not-at-top
  from ecgjax.data import batch as batch_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.objectives import classifier, supervised  # pylint: disable=g-import-not-at-top
  from ecgjax.objectives.masked_autoencoder import compute_dtype  # pylint: disable=g-import-not-at-top
  from configs import ecgfm, finetune, hybrid, stmem  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  if model in ("st_mem", "hybrid", "ecg_fm"):
    config = {"st_mem": lambda: stmem.get_config(f"variant={variant}"),
              "hybrid": lambda: hybrid.get_config(f"variant={variant},preset=hybrid"),
              "ecg_fm": lambda: ecgfm.get_config(f"variant={variant}")}[model]()
    sizes = {"B": batch, "L": len(config.input.leads), "T": config.input.samples, "K": 1}
    host = batch_lib.example_batch(sizes, "train")
  else:
    image = model == "resnet2d"
    config = finetune.get_config(f"backbone={model},variant={variant}"
                                 + (",input=image" if image else ""))
    config.total_steps, config.warmup_steps = 1000, 10
    from ecgjax.data import images, transforms  # pylint: disable=g-import-not-at-top
    pp = (images.ImagePreprocessing.from_dict(config.image.to_dict()) if image
          else transforms.Preprocessing.from_dict(config.input.to_dict()))
    host = batch_lib.train_example(pp, N_LABELS, n=batch)
    host["labels"] = (rng.random(host["labels"].shape) < 0.3).astype(np.float32)
  config.batch_size = batch
  config.dtype = _DTYPE.value
  config.param_sharding = _SHARDING.value
  config.remat = _REMAT.value
  key = "pixels" if "pixels" in host else "signal"
  host[key] = rng.standard_normal(host[key].shape).astype(np.float32)
  for k in ("lead_mask", "view_mask"):
    if k in host:
      host[k] = np.ones_like(host[k])
  if "index" in host:
    host["index"] = np.arange(batch, dtype=np.int64)
    host["patient"] = np.arange(batch, dtype=np.int64)
  if model in ("st_mem", "hybrid", "ecg_fm"):
    objective = objectives.build(config)
  else:
    backbone = classifier.build_backbone(
        config.model, config.variant, N_LABELS, dtype=compute_dtype(config.dtype),
        use_bn=config.use_bn, dropout=config.backbone_dropout,
        spatial_attention=config.get("spatial_attention"), remat=config.remat)
    objective = supervised.build_from_config(config, backbone,
                                             [f"y{i}" for i in range(N_LABELS)])
  return config, objective, host


def run_one(model: str, variant: str, batch: int, peak: tuple[float, str]) -> dict:
  """Builds, compiles and times one train step; the result row."""
  import jax  # pylint: disable=g-import-not-at-top
  from ecgjax.train import mesh as mesh_lib, step as step_lib  # pylint: disable=g-import-not-at-top
  config, objective, host_batch = _build(model, variant, batch)
  mesh = mesh_lib.make_mesh()
  # The loop's own construction, so the number is the step a real run executes.
  training = step_lib.build_training(config, objective, mesh, host_batch)
  n_params, _ = training.params
  state, train_step = training.init(), training.train_step
  jax.block_until_ready(state)
  host_memory.release_free_memory()  # as the loop does after initialising
  rss_state = host_memory.rss_mib()
  dev_batch = mesh_lib.to_global(host_batch, mesh)
  flops, temp_mib = float("nan"), None
  t0 = time.perf_counter()
  if hasattr(train_step, "lower"):
    try:
      compiled = train_step.lower(state, dev_batch).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      flops = float(cost.get("flops", float("nan")))
      temp_mib = round(compiled.memory_analysis().temp_size_in_bytes / 2**20, 1)
    except Exception:  # pylint: disable=broad-except  (a backend without the analyses)
      pass
  host_memory.release_free_memory()  # as the loop does between compiling and step 1
  rss_compiled = host_memory.rss_mib()
  # Lowering + compiling (above) and the first call, which reuses that executable.
  state, metrics = train_step(state, dev_batch)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - t0
  times = []
  for _ in range(_STEPS.value):
    t0 = time.perf_counter()
    state, metrics = train_step(state, dev_batch)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  tflops = flops / med / 1e12
  dev = jax.devices()[0]
  stats = dev.memory_stats() or {}  # None on a CPU; on a GPU the allocator's peak so far
  peak_dev = stats.get("peak_bytes_in_use")
  return {
      "model": model, "variant": variant, "batch": batch, "dtype": config.dtype,
      "param_sharding": config.param_sharding, "remat": config.remat,
      "samples_per_s": round(batch / med, 3), "median_step_s": round(med, 4),
      "min_step_s": round(min(times), 4), "compile_s": round(compile_s, 2),
      "flops_per_step": flops, "tflops_per_s": round(tflops, 4),
      "peak_tflops": round(peak[0], 3), "peak_source": peak[1],
      "mfu": round(tflops / (peak[0] * jax.device_count()), 4),
      "xla_temp_mib": temp_mib,
      "rss_after_state_mib": rss_state and round(rss_state, 1),
      "rss_after_compile_mib": rss_compiled and round(rss_compiled, 1),
      "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
      "peak_device_mib": peak_dev and round(peak_dev / 2**20, 1),
      "params": n_params, "devices": jax.device_count(), "device": dev.device_kind,
      "backend": jax.default_backend(), "loss": float(metrics["loss"]),
  }


def main(argv):
  del argv
  import jax  # pylint: disable=g-import-not-at-top
  model = _MODEL.value
  variant = _VARIANT.value or DEFAULT_VARIANT[model]
  peak = device_peak(jax, _DTYPE.value)
  batches = [int(b) for b in _SWEEP.value] or [_BATCH.value]
  for batch in batches:
    result = run_one(model, variant, batch, peak)
    width = max(len(k) for k in result)
    print("-" * (width + 24))
    for k, v in result.items():
      print(f"{k:<{width}}  {v}")
    print("-" * (width + 24))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
  app.run(main)
