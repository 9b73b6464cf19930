#!/usr/bin/env bash
# SSL ablation on the shared PTB-XL corpus: MAE-only, contrastive-only and hybrid pretraining of
# one ST-MEM ViT with identical settings and steps, ECG-FM's recipe (wav2vec 2.0 + CMSC + RLM) for
# the same steps, randomly initialised ST-MEM and ECG-FM encoders, and the fusion of the MAE and
# contrastive embeddings; each probed by grouped 5-fold CV over the 353 labelled PTB-XL records,
# two seeds.
#   bash bench/ssl_ablation.sh                           # the README's table (mu, 800 steps, CPU)
#   VARIANT=S/75 ECGFM_VARIANT=small STEPS=20000 BATCH=256 bash bench/ssl_ablation.sh   # GPU
#   BENCHMARK=1 bash bench/ssl_ablation.sh               # also `python -m ecgjax.benchmark --quick`
#                                                          on every encoder ($OUT/benchmark_quick)
# Finished arms (an export present) are not retrained, so an interrupted run picks up where it
# stopped; results in $OUT/summary.md. The mae arm is the hybrid objective without its InfoNCE
# term (configs/hybrid.py): the same two lead-dropped views per record as the hybrid.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${VARIANT:-mu}; ECGFM_VARIANT=${ECGFM_VARIANT:-mu}
STEPS=${STEPS:-800}; BATCH=${BATCH:-64}; SEEDS=${SEEDS:-0,1}
PEAK_LR=${PEAK_LR:-1.5e-3}            # ST-MEM arms: warmup then cosine to 0
ECGFM_PEAK_LR=${ECGFM_PEAK_LR:-5e-4}  # ECG-FM: its recipe's constant lr after warmup
OUT=${OUT:-runs/ablation}; PY=${PY:-.venv/bin/python}; WORKERS=${WORKERS:-2}
PTBXL=${PTBXL:-ptbxl:../shared/data/ptbxl}; BENCHMARK=${BENCHMARK:-0}
base_lr() { "$PY" -c "print($1 * 256 / $BATCH)"; }
COMMON=(--config.total_steps="$STEPS" --config.batch_size="$BATCH" --config.warmup_steps=$((STEPS / 10))
        --config.checkpoint_every_steps="$STEPS" --config.vis_every_steps=0
        --config.data_workers="$WORKERS")
mkdir -p "$OUT"
pretrain() {  # arm, config, extra flags
  local arm=$1 config=$2; shift 2
  [ -f "$OUT/$arm/export/config.json" ] && return
  "$PY" pretrain/main.py --config "$config" --workdir "$OUT/$arm" "${COMMON[@]}" "$@" \
    > "$OUT/$arm.log" 2>&1
}
for preset in mae contrastive hybrid; do
  pretrain "$preset" "configs/hybrid.py:variant=$VARIANT,preset=$preset,corpus=ptbxl250" \
    --config.base_lr="$(base_lr "$PEAK_LR")"
done
pretrain ecgfm "configs/ecgfm.py:variant=$ECGFM_VARIANT,corpus=ptbxl250" \
  --config.base_lr="$(base_lr "$ECGFM_PEAK_LR")"
# Randomly initialised encoders of both families: what pretraining adds to each architecture.
pretrain random "configs/hybrid.py:variant=$VARIANT,preset=mae,corpus=ptbxl250" --config.total_steps=0
pretrain random_ecgfm "configs/ecgfm.py:variant=$ECGFM_VARIANT,corpus=ptbxl250" --config.total_steps=0
ARMS=(random mae contrastive hybrid random_ecgfm ecgfm)
for arm in "${ARMS[@]}"; do
  [ -f "$OUT/$arm.npz" ] || "$PY" finetune/embed.py --export "$OUT/$arm/export" --data "$PTBXL" \
    --out "$OUT/$arm.npz"
done
probe() {  # name, then embedding files
  local name=$1; shift
  local args=(); for f in "$@"; do args+=(--embeddings "$f"); done
  "$PY" finetune/probe.py "${args[@]}" --protocol groupcv --folds 5 --seeds "$SEEDS" \
    --report "$OUT/report_$name" --json | tail -1 > "$OUT/$name.json"
}
for arm in "${ARMS[@]}"; do probe "$arm" "$OUT/$arm.npz"; done
probe fusion_mae_contrastive "$OUT/mae.npz" "$OUT/contrastive.npz"
"$PY" - "$OUT" "${ARMS[@]}" fusion_mae_contrastive <<'PY' | tee "$OUT/summary.md"
import datetime, json, os, re, sys
out, names = sys.argv[1], sys.argv[2:]

def minutes(arm):  # pretraining wall time from the first and last timestamped log lines
  path = os.path.join(out, f"{arm}.log")
  if not os.path.exists(path):
    return "-"
  stamps = re.findall(r"^[IWE]\d{4} (\d\d:\d\d:\d\d)", open(path).read(), re.M)
  if len(stamps) < 2:
    return "-"
  t0, t1 = (datetime.datetime.strptime(s, "%H:%M:%S") for s in (stamps[0], stamps[-1]))
  return f"{((t1 - t0).total_seconds() % 86400) / 60:.0f}"

rows = [json.load(open(os.path.join(out, f"{n}.json"))) for n in names]
labels = rows[0]["label_names"]
print("| encoder | pretraining min | macro AUROC (95% CI) | mean +- std over seeds | macro AUPRC | "
      + " | ".join(labels) + " |")
print("|---" * (5 + len(labels)) + "|")
for name, d in zip(names, rows):
  lo, hi = d["macro_auroc_ci"]
  std = d.get("macro_auroc_std")  # null with a single seed
  spread = f"{d['macro_auroc_mean']:.3f} +- {std:.3f}" if std is not None else "-"
  per = " | ".join(f"{d['per_label'][k]['auroc']:.3f}" for k in labels)
  print(f"| {name} | {minutes(name)} | {d['macro_auroc']:.3f} ({lo:.3f}-{hi:.3f}) | {spread} | "
        f"{d['macro_auprc']:.3f} | {per} |")
PY
if [ "$BENCHMARK" = 1 ]; then
  exports=(); for arm in "${ARMS[@]}"; do exports+=(--export "$OUT/$arm/export"); done
  "$PY" -m ecgjax.benchmark --quick "${exports[@]}" --data "$PTBXL" --out "$OUT/benchmark_quick" \
    > "$OUT/benchmark_quick.log" 2>&1
  cat "$OUT/benchmark_quick/results.md"
fi
