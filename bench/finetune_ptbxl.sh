#!/usr/bin/env bash
# Supervised fine-tuning on the shared PTB-XL subset (353 records, 5 superclasses): grouped
# stratified 5-fold CV by patient, each fold's checkpoint picked on a validation part (20% of
# the patients) of its training folds, out-of-fold macro AUROC with a bootstrap 95% CI.
# Rows: Net1D 8m and ResNet1D-50 from scratch (100 Hz, 10 s), the ST-MEM demo encoder
# (`make demo`) fine-tuned the same way (its own contract: 250 Hz, 3 crops of 9 s).
#   bash bench/finetune_ptbxl.sh                       # the README's CPU table
#   NET1D_EPOCHS=60 RESNET_EPOCHS=60 FS=500 bash bench/finetune_ptbxl.sh   # a GPU-size run
# Finished rows are kept and an interrupted one resumes; the results are in $OUT/finetune_summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}; OUT=${OUT:-runs}; FS=${FS:-100}
NET1D_EPOCHS=${NET1D_EPOCHS:-12}; RESNET_EPOCHS=${RESNET_EPOCHS:-4}; STMEM_EPOCHS=${STMEM_EPOCHS:-12}
BATCH=${BATCH:-32}; BASE_LR=${BASE_LR:-0.008}   # peak lr = BASE_LR * BATCH / 256 = 1e-3
PTBXL=${PTBXL:-../shared/data/ptbxl}
STMEM_EXPORT=${STMEM_EXPORT:-runs/demo/stmem/export}
COMMON=(--config.batch_size="$BATCH" --config.base_lr="$BASE_LR")
run() {  # name, config, extra flags; a finished row (results.json) is not rerun
  local name=$1 config=$2; shift 2
  [ -f "$OUT/finetune_$name/results.json" ] && return
  /usr/bin/time -f "%e s wall" -o "$OUT/finetune_$name.time" \
    "$PY" finetune/finetune.py --config "$config" --workdir "$OUT/finetune_$name" \
    "${COMMON[@]}" "$@" > "$OUT/finetune_$name.log" 2>&1
}
mkdir -p "$OUT"
[ -f "$STMEM_EXPORT/config.json" ] || "$PY" pretrain/main.py \
  --config configs/stmem.py:variant=mu,runlocal --workdir "$(dirname "$STMEM_EXPORT")"
run stmem_demo configs/finetune.py:backbone=export --config.export="$STMEM_EXPORT" \
  --config.data="ptbxl:$PTBXL" --config.epochs="$STMEM_EPOCHS"
run net1d8m "configs/finetune.py:backbone=net1d,variant=8m,fs=$FS" \
  --config.data="ptbxl:$PTBXL?fs=$FS" --config.epochs="$NET1D_EPOCHS"
run resnet1d50 "configs/finetune.py:backbone=resnet1d,variant=resnet1d50,fs=$FS" \
  --config.data="ptbxl:$PTBXL?fs=$FS" --config.epochs="$RESNET_EPOCHS"
for name in net1d8m resnet1d50 stmem_demo; do
  "$PY" -c "import json, sys; r = json.load(open(sys.argv[1])); lo, hi = r['macro_auroc_ci']; \
print(f\"{sys.argv[2]:<12} macro AUROC {r['macro_auroc']:.3f} ({lo:.3f}-{hi:.3f}), best epochs \
{r['best_epochs']}, {r['wall_s'] / 60:.1f} min\")" "$OUT/finetune_$name/results.json" "$name"
done | tee "$OUT/finetune_summary.txt"
