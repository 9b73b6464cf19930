#!/usr/bin/env bash
# SSL ablation on the shared PTB-XL corpus: MAE-only, contrastive-only and hybrid pretraining with
# identical settings and steps, a randomly initialised encoder, and the fusion of the MAE and
# contrastive embeddings; each probed by grouped 5-fold CV over the 353 labelled PTB-XL records.
#   VARIANT=S/75 STEPS=2000 BATCH=64 bash bench/ssl_ablation.sh      # results in runs/ablation/
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${VARIANT:-S/75}; STEPS=${STEPS:-2000}; BATCH=${BATCH:-64}; SEEDS=${SEEDS:-0,1}
OUT=${OUT:-runs/ablation}; PY=${PY:-.venv/bin/python}
PTBXL=${PTBXL:-ptbxl:../shared/data/ptbxl}
COMMON=(--config.total_steps="$STEPS" --config.batch_size="$BATCH" --config.warmup_steps=$((STEPS / 10))
        --config.checkpoint_every_steps="$STEPS" --config.vis_every_steps=0 --config.data_workers=2)
mkdir -p "$OUT"
for preset in mae contrastive hybrid; do
  "$PY" pretrain/main.py --config "configs/hybrid.py:variant=$VARIANT,preset=$preset,corpus=ptbxl250" \
    --workdir "$OUT/$preset" "${COMMON[@]}"
done
"$PY" pretrain/main.py --config "configs/hybrid.py:variant=$VARIANT,preset=mae,corpus=ptbxl250" \
  --workdir "$OUT/random" --config.total_steps=0
for arm in random mae contrastive hybrid; do
  "$PY" finetune/embed.py --export "$OUT/$arm/export" --data "$PTBXL" --out "$OUT/$arm.npz"
done
probe() {  # name, then embedding files
  local name=$1; shift
  local args=(); for f in "$@"; do args+=(--embeddings "$f"); done
  "$PY" finetune/probe.py "${args[@]}" --protocol groupcv --folds 5 --seeds "$SEEDS" \
    --report "$OUT/report_$name" --json | tail -1 > "$OUT/$name.json"
}
for arm in random mae contrastive hybrid; do probe "$arm" "$OUT/$arm.npz"; done
probe fusion_mae_contrastive "$OUT/mae.npz" "$OUT/contrastive.npz"
"$PY" - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
print(f"{'encoder':28s} {'macro AUROC':>12s} {'95% CI':>16s} {'mean+-std':>14s}")
for name in ("random", "mae", "contrastive", "hybrid", "fusion_mae_contrastive"):
  d = json.load(open(os.path.join(out, f"{name}.json")))
  lo, hi = d["macro_auroc_ci"]
  std = d.get("macro_auroc_std")  # null with a single seed
  spread = f"{d['macro_auroc_mean']:.3f}+-{std:.3f}" if std is not None else "-"
  print(f"{name:28s} {d['macro_auroc']:12.3f} {f'({lo:.3f}-{hi:.3f})':>16s} {spread:>14s}")
PY
