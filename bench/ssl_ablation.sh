#!/usr/bin/env bash
# SSL ablation on the shared PTB-XL corpus: MAE-only, contrastive-only and hybrid pretraining of
# one ST-MEM ViT with identical settings and steps, ECG-FM's recipe (wav2vec 2.0 + CMSC + RLM) for
# the same steps, a randomly initialised ST-MEM encoder, and the fusion of the MAE and contrastive
# embeddings; each probed by grouped 5-fold CV over the 353 labelled PTB-XL records, two seeds.
#   bash bench/ssl_ablation.sh                           # the README's table (mu, 800 steps, CPU)
#   VARIANT=S/75 ECGFM_VARIANT=small STEPS=20000 BATCH=256 bash bench/ssl_ablation.sh   # GPU
# Finished arms (an export present) are not retrained, so an interrupted run picks up where it
# stopped; results in $OUT/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${VARIANT:-mu}; ECGFM_VARIANT=${ECGFM_VARIANT:-mu}
STEPS=${STEPS:-800}; BATCH=${BATCH:-64}; SEEDS=${SEEDS:-0,1}
PEAK_LR=${PEAK_LR:-1.5e-3}            # ST-MEM arms: warmup then cosine to 0
ECGFM_PEAK_LR=${ECGFM_PEAK_LR:-5e-4}  # ECG-FM: its recipe's constant lr after warmup
OUT=${OUT:-runs/ablation}; PY=${PY:-.venv/bin/python}; WORKERS=${WORKERS:-2}
PTBXL=${PTBXL:-ptbxl:../shared/data/ptbxl}
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
pretrain random "configs/hybrid.py:variant=$VARIANT,preset=mae,corpus=ptbxl250" --config.total_steps=0
ARMS=(random mae contrastive hybrid ecgfm)
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
"$PY" - "$OUT" "${ARMS[@]}" fusion_mae_contrastive <<'PY' | tee "$OUT/summary.txt"
import json, sys, os
out, names = sys.argv[1], sys.argv[2:]
print(f"{'encoder':28s} {'macro AUROC':>12s} {'95% CI':>16s} {'mean+-std':>14s}")
for name in names:
  d = json.load(open(os.path.join(out, f"{name}.json")))
  lo, hi = d["macro_auroc_ci"]
  std = d.get("macro_auroc_std")  # null with a single seed
  spread = f"{d['macro_auroc_mean']:.3f}+-{std:.3f}" if std is not None else "-"
  print(f"{name:28s} {d['macro_auroc']:12.3f} {f'({lo:.3f}-{hi:.3f})':>16s} {spread:>14s}")
PY
