"""Records/s through the whole training input pipeline, per source and worker count.

  python bench/data_throughput.py                       # the default sources below
  python bench/data_throughput.py --data 'ptbxl:../shared/data/ptbxl' --workers 0,2,4
  python bench/data_throughput.py --images runs/printouts --data none   # printouts only

Each run builds `train_iterator` (read + ST-MEM preprocessing + augmentation +
crop + standardise + batch), skips `--warmup` batches (worker start-up), then
times `--batches` batches. "rec/s/core" divides by the CPU seconds this process
and its worker processes spent in the timed window (Linux /proc), so it reads
as records per second per busy core whatever the machine. Default sources:
synthetic:2000, ../shared/data/ptbxl-pretrain-250hz/signals.npy and PTB-XL when
present, and a prepared (float16) copy of the npy corpus made in a temp dir.
`--images DIR` adds rows for the printouts in DIR (`image:DIR`: decode, EIANet's
preprocessing at --image_size, or the raw arm, batch), without augmentation, and one row for
what fine-tuning's step reads: the same pictures prepared once into memory (uint8, fitted, as
`ecgjax.finetune.data.PreparedInMemory` holds them), with the seconds that preparation took,
and rows for the same pictures prepared on disk (`python -m ecgjax.data prepare image:DIR`,
memory-mapped uint8 shards, made in a temp dir) at each worker count.
The JSON line is last, for scripts.
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")

_DATA = flags.DEFINE_multi_string("data", None, "data spec (repeatable); default: see above")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "grain worker counts to try")
_BATCH = flags.DEFINE_integer("batch", 64, "batch size")
_BATCHES = flags.DEFINE_integer("batches", 20, "timed batches per run")
_WARMUP = flags.DEFINE_integer("warmup", 3, "untimed batches first")
_AUGMENT = flags.DEFINE_bool("augment", True, "apply ST-MEM RandAugment")
_NO_PREPARED = flags.DEFINE_bool("skip_prepared", False, "do not build the prepared copy")
_IMAGES = flags.DEFINE_multi_string("images", None, "folder of printouts (image:DIR) to time")
_IMAGE_SIZE = flags.DEFINE_list("image_size", ["512", "724"], "image height,width")


def _cpu_seconds() -> float | None:
  """CPU time of this process and its live children (grain workers), Linux only."""
  tick = os.sysconf("SC_CLK_TCK")
  me = os.getpid()
  total = sum(os.times()[:2])
  try:
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
  except OSError:
    return None
  for pid in pids:
    try:
      with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
      continue  # Gone in between.
    if int(fields[1]) == me:  # ppid
      total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
  return total


def _default_specs(tmp: str, pp) -> list[tuple[str, str]]:
  from ecgjax import data
  from ecgjax.data import prepare as prepare_lib
  out = [("synthetic", "synthetic:2000")]
  npy = os.path.join(SHARED, "ptbxl-pretrain-250hz", "signals.npy")
  if os.path.isfile(npy):
    out.append(("npy", f"npy:{npy}?fs=250"))
  ptbxl = os.path.join(SHARED, "ptbxl")
  if os.path.isdir(ptbxl):
    try:
      data.open_source(f"ptbxl:{ptbxl}")
      out.append(("ptbxl", f"ptbxl:{ptbxl}"))
    except ValueError:  # No ptbxl reader in this version.
      pass
  if os.path.isfile(npy) and not _NO_PREPARED.value:
    dst = os.path.join(tmp, "npy-prepared")
    t0 = time.perf_counter()
    meta = prepare_lib.prepare(f"npy:{npy}?fs=250", dst, pp, progress=False)
    dt = time.perf_counter() - t0
    print(f"prepared {meta['counts']['records']} records of the npy corpus in "
          f"{dt:.1f}s ({meta['counts']['records'] / dt:.0f} rec/s, "
          f"{os.cpu_count()} processes)")
    out.append(("prepared(npy)", f"prepared:{dst}"))
  return out


def _augmenter(fs: float):
  if not _AUGMENT.value:
    return None, "none"
  try:
    from ecgjax.data import augment
    return augment.StMemRandAugment(fs=fs), "StMemRandAugment"
  except (ImportError, AttributeError):
    return None, "none (ecgjax.data.augment unavailable)"


def _run(source, pp, aug, workers: int) -> dict:
  from ecgjax import data
  it = data.train_iterator(source, pp, global_batch_size=_BATCH.value, seed=0,
                           worker_count=workers, augment=aug)
  try:
    for _ in range(_WARMUP.value):
      next(it)
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    for _ in range(_BATCHES.value):
      next(it)
    wall, cpu1 = time.perf_counter() - t0, _cpu_seconds()
  finally:
    if hasattr(it, "close"):
      it.close()
  n = _BATCHES.value * _BATCH.value
  cores = (cpu1 - cpu0) / wall if cpu0 is not None else None
  return {"workers": workers, "records_per_s": round(n / wall, 1),
          "busy_cores": round(cores, 2) if cores else None,
          "records_per_s_per_core": round(n / (cpu1 - cpu0), 1) if cores else None}


def main(argv):
  del argv
  from ecgjax import data
  from ecgjax.data import transforms

  pp = transforms.st_mem_preprocessing()
  aug, aug_name = _augmenter(pp.fs)
  results = []
  with tempfile.TemporaryDirectory(prefix="ecgjax-bench-") as tmp:
    specs = ([(s.split(":", 1)[0], s) for s in _DATA.value if s != "none"] if _DATA.value
             else _default_specs(tmp, pp))
    print(f"ST-MEM preprocessing, augment {aug_name}, batch {_BATCH.value}, "
          f"{_BATCHES.value} batches after {_WARMUP.value} warm-up; "
          f"{os.cpu_count()} CPU cores")
    header = f"{'source':<16} {'workers':>7} {'rec/s':>9} {'busy cores':>10} {'rec/s/core':>10}"
    print(header)
    print("-" * len(header))
    for name, spec in specs:
      source = data.open_source(spec)
      for w in [int(w) for w in _WORKERS.value]:
        r = {"source": name, "spec": spec, "records": len(source), **_run(source, pp, aug, w)}
        results.append(r)
        print(f"{name:<16} {w:>7} {r['records_per_s']:>9.0f} "
              f"{r['busy_cores'] or float('nan'):>10.2f} "
              f"{r['records_per_s_per_core'] or float('nan'):>10.0f}", flush=True)
    from ecgjax.data import images
    h, w = (int(v) for v in _IMAGE_SIZE.value)
    for folder in _IMAGES.value or ():
      source = data.open_source(f"image:{folder}")
      for preset in ("eianet", "raw"):
        ipp = images.preset(preset, height=h, width=w)
        name = f"image/{preset}"
        for nw in [int(v) for v in _WORKERS.value]:
          r = {"source": name, "spec": f"image:{folder}", "records": len(source),
               "image_size": [h, w], **_run(source, ipp, None, nw)}
          results.append(r)
          print(f"{name:<16} {nw:>7} {r['records_per_s']:>9.1f} "
                f"{r['busy_cores'] or float('nan'):>10.2f} "
                f"{r['records_per_s_per_core'] or float('nan'):>10.1f}", flush=True)
      from ecgjax.finetune import data as ft_data
      ipp = images.preset("eianet", height=h, width=w)
      t0 = time.perf_counter()
      held = ft_data.PreparedInMemory(source, ipp)
      prep_s = time.perf_counter() - t0
      r = {"source": "image/in_memory", "spec": f"image:{folder}", "records": len(source),
           "image_size": [h, w], "prepare_s": round(prep_s, 1), **_run(held, ipp, None, 0)}
      results.append(r)
      print(f"{'image/in_memory':<16} {0:>7} {r['records_per_s']:>9.1f} "
            f"{r['busy_cores'] or float('nan'):>10.2f} "
            f"{r['records_per_s_per_core'] or float('nan'):>10.1f}  "
            f"(prepared in {prep_s:.0f} s)", flush=True)
      from ecgjax.data import prepare as prepare_lib
      out = os.path.join(tmp, f"images-{len(results)}")
      t0 = time.perf_counter()
      prepare_lib.prepare(f"image:{folder}", out, ipp, progress=False)
      disk_s = time.perf_counter() - t0
      disk = data.open_source(f"prepared:{out}")
      for nw in [int(v) for v in _WORKERS.value]:
        r = {"source": "image/prepared", "spec": f"image:{folder}", "records": len(disk),
             "image_size": [h, w], "prepare_s": round(disk_s, 1), **_run(disk, ipp, None, nw)}
        results.append(r)
        print(f"{'image/prepared':<16} {nw:>7} {r['records_per_s']:>9.1f} "
              f"{r['busy_cores'] or float('nan'):>10.2f} "
              f"{r['records_per_s_per_core'] or float('nan'):>10.1f}  "
              f"(prepared on disk in {disk_s:.0f} s)", flush=True)
  print(json.dumps({"benchmark": "data_throughput", "batch": _BATCH.value,
                    "augment": aug_name, "cpu_count": os.cpu_count(),
                    "results": results}))


if __name__ == "__main__":
  app.run(main)
