#!/usr/bin/env bash
# Issue 16 item 5 in ONE call on a lent GPU machine: the ST-MEM B/75 and ECG-FM base train
# steps in bfloat16 at batch 64-256 with MFU (bench/pretrain_step.py: XLA's FLOPs, the
# datasheet peak), the same ST-MEM step in PyTorch with AMP (bench/torch_st_mem_step.py, the
# architecture-faithful port; the official code too when ST_MEM_OFFICIAL names a checkout),
# and the input pipeline's records/s on that machine's cores (bench/data_throughput.py).
#
#   here:   bash bench/gpu_wheels.sh            # the wheels the GPU image lacks -> .whl/
#   there:  run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=420)
#   smoke:  GPU_SESSION_SMOKE=1 bash bench/gpu_session.sh   # tiny sizes, any machine
#
# Every stage has its own time limit and log, so a stage that fails or runs long costs only
# itself; logs and summary.txt go to $OUT (the device tool brings that folder back).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
WHEELS=${WHEELS:-.whl}  # bench/gpu_wheels.sh's folder (Python 3.12 wheels)
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || { echo "wheel install failed" | tee "$OUT/summary.txt"; exit 1; }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

if [ -n "${GPU_SESSION_SMOKE:-}" ]; then
  ST="--variant mu --sweep 2 --steps 1"; FM="--variant mu --sweep 2 --steps 1"
  TB="2"; TV="--variant mu --steps 1"; DT="--data synthetic:64 --workers 0,1 --batch 8 --batches 2"
  LIM=120
else
  ST="--sweep 64,128,256 --steps 10"; FM="--sweep 64,128 --steps 5"
  TB="64 128 256"; TV="--steps 10"; DT="--data synthetic:3000 --workers 0,8,15 --batch 256 --batches 8"
  LIM=150
fi

stage() {  # stage NAME SECONDS CMD...: runs CMD with a limit, logs to $OUT/NAME.log
  local name=$1 secs=$2; shift 2
  local t0=$SECONDS
  timeout "$secs" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - t0))s" | tee -a "$OUT/status.txt"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    || echo "no nvidia-smi"; nproc; "$PY" -c "import jax; print(jax.__version__, jax.devices())"
} > "$OUT/device.txt" 2>&1

stage st_mem "$LIM" "$PY" bench/pretrain_step.py --model st_mem --dtype bfloat16 $ST
stage ecg_fm "$LIM" "$PY" bench/pretrain_step.py --model ecg_fm --dtype bfloat16 $FM
TDEV=$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')
for b in $TB; do
  stage "torch_st_mem_$b" 60 "$PY" bench/torch_st_mem_step.py --device "$TDEV" --amp \
    --batch "$b" $TV
done
if [ -n "${ST_MEM_OFFICIAL:-}" ]; then
  stage torch_official 60 "$PY" bench/torch_st_mem_step.py --official "$ST_MEM_OFFICIAL" \
    --device cuda --amp --batch 128 --steps 10
fi
stage data 90 "$PY" bench/data_throughput.py $DT

# One line per result: the JSON lines the benchmarks end with.
"$PY" - "$OUT" <<'PYEOF' | tee "$OUT/summary.txt"
import glob, json, os, sys
out = sys.argv[1]
print(open(os.path.join(out, "device.txt")).read().strip())
for path in sorted(glob.glob(os.path.join(out, "*.log"))):
  name = os.path.basename(path)[:-4]
  rows = []
  for line in open(path, errors="replace"):
    if line.startswith("{"):
      try:
        rows.append(json.loads(line))
      except ValueError:
        pass
  if not rows:
    tail = open(path, errors="replace").read().strip().splitlines()[-3:]
    print(f"{name}: no result; last lines: {tail}")
  keys = ("model", "variant", "batch", "dtype", "amp_bf16", "samples_per_s", "tflops_per_s",
          "mfu", "peak_device_mib", "xla_temp_mib", "device", "device_name")
  for r in rows:
    print(name, json.dumps({k: r[k] for k in keys if k in r} if "samples_per_s" in r else r))
PYEOF
