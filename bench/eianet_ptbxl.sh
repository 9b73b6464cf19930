#!/usr/bin/env bash
# EIANet's ablations at CPU size on PTB-XL records rendered by ecgjax (README "ECG printouts").
#
#   bash bench/eianet_ptbxl.sh [OUT] [ARM ...]   (default OUT=runs/eianet_ptbxl, every arm)
#
# Renders the shared PTB-XL subset as 3x4+II printouts at 100 dpi, then fine-tunes the mu-size
# EIANet (ResNet2D + spatial attention) on NORM vs. not with grouped 3-fold CV (FOLDS, EPOCHS,
# HEIGHT, WIDTH, LOSS, AUGMENT override the base recipe) in these arms:
#   eianet        preprocessed images, spatial attention, the base recipe's loss
#   raw_images    RGB printouts, every preprocessing stage off
#   no_attention  the plain ResNet baseline (spatial_attention=false)
#   bce | brl     the other loss of the pair
#   residual, residual_raw, residual_<other loss>: the gates applied as x * (1 + a)
#                 (config.attention_residual), preprocessed, raw, the other loss
#   no_attention_raw  the plain ResNet on raw RGB printouts
# Each arm prints its macro AUROC with the bootstrap 95% CI (1000 resamples) and the seconds
# per epoch (wall time of the arm / folds / epochs, validation included), and writes
# OUT/<arm>/results.json; OUT/summary.tsv collects the rows.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/eianet_ptbxl}
shift || true
ARMS=("$@")
[ ${#ARMS[@]} -eq 0 ] && ARMS=(eianet raw_images no_attention other_loss)
PY=${PYTHON:-.venv/bin/python}
FOLDS=${FOLDS:-3}; EPOCHS=${EPOCHS:-8}; LOSS=${LOSS:-bce}; AUGMENT=${AUGMENT:-none}
OTHER=$([ "$LOSS" = bce ] && echo brl || echo bce)
mkdir -p "$OUT"
if [ ! -f "$OUT/printouts/labels.csv" ]; then
  /usr/bin/time -f "rendered in %e s" $PY -m ecgjax.images render \
    "ptbxl:../shared/data/ptbxl" "$OUT/printouts" --dpi 100
fi
COMMON=(--config "configs/finetune.py:backbone=resnet2d,input=image,runlocal"
        --config.data="image:$OUT/printouts" --config.labels=NORM
        --config.cv_folds=$FOLDS --config.epochs=$EPOCHS --config.batch_size=16
        --config.image.height=${HEIGHT:-192} --config.image.width=${WIDTH:-272}
        --config.loss=$LOSS --config.augment=$AUGMENT --config.bootstrap=1000)
RAW=(--config.image.channels=3 --config.image.threshold=false --config.image.components=false
     --config.image.opening=false --config.image.blur=false --config.image.grayscale=false
     --config.image.equalize=false --config.image.binarize=false)
MUL=(--config.attention_residual=false)  # the paper's gates, x * a
RES=(--config.attention_residual=true)   # x * (1 + a)
run() {  # name, extra flags...
  local name=$1; shift
  local t0; t0=$(date +%s)
  $PY finetune/finetune.py "${COMMON[@]}" --workdir "$OUT/$name" "$@" > "$OUT/$name.log" 2>&1
  local secs=$(( $(date +%s) - t0 ))
  $PY - "$OUT/$name/results.json" "$name" "$secs" "$FOLDS" "$EPOCHS" <<'EOF' | tee -a "$OUT/summary.tsv"
import json, sys
path, name, secs, folds, epochs = sys.argv[1:]
t = json.load(open(path))["test"]
lo, hi = t["macro_auroc_ci"]
print(f"{name}\t{t['macro_auroc']:.3f} [{lo:.3f}-{hi:.3f}]\t"
      f"{int(secs) / int(folds) / int(epochs):.0f} s/epoch")
EOF
}
for arm in "${ARMS[@]}"; do
  case $arm in
    eianet) run eianet "${MUL[@]}" ;;
    raw_images) run raw_images "${MUL[@]}" "${RAW[@]}" ;;
    no_attention) run no_attention --config.spatial_attention=false ;;
    other_loss) run "$OTHER" "${MUL[@]}" --config.loss=$OTHER ;;
    residual) run residual "${RES[@]}" ;;
    residual_raw) run residual_raw "${RES[@]}" "${RAW[@]}" ;;
    residual_other_loss) run "residual_$OTHER" "${RES[@]}" --config.loss=$OTHER ;;
    no_attention_raw) run no_attention_raw --config.spatial_attention=false "${RAW[@]}" ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
done
