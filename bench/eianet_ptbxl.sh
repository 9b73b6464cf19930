#!/usr/bin/env bash
# EIANet's ablations at CPU size on PTB-XL records rendered by ecgjax (README "ECG printouts").
#
#   bash bench/eianet_ptbxl.sh [OUT]        (default OUT=runs/eianet_ptbxl)
#
# Renders the shared PTB-XL subset as 3x4+II printouts at 100 dpi, then fine-tunes the mu-size
# EIANet (ResNet2D + spatial attention, binary recall loss) on NORM vs. not, grouped CV
# (FOLDS=3, EPOCHS=8, HEIGHT=192, WIDTH=272 by default: about 5 minutes an arm on 2 cores), in
# four arms: preprocessed images (EIANet), raw RGB images, no spatial attention, BCE.
# Each arm prints its macro AUROC with the bootstrap 95% CI and writes OUT/<arm>/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/eianet_ptbxl}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
if [ ! -f "$OUT/printouts/labels.csv" ]; then
  /usr/bin/time -f "rendered in %e s" $PY -m ecgjax.images render \
    "ptbxl:../shared/data/ptbxl" "$OUT/printouts" --dpi 100
fi
COMMON=(--config "configs/finetune.py:backbone=resnet2d,input=image,runlocal"
        --config.data="image:$OUT/printouts" --config.labels=NORM
        --config.cv_folds=${FOLDS:-3} --config.epochs=${EPOCHS:-8} --config.batch_size=16
        --config.image.height=${HEIGHT:-192} --config.image.width=${WIDTH:-272}
        --config.bootstrap=1000)
RAW=(--config.image.channels=3 --config.image.threshold=false --config.image.components=false
     --config.image.opening=false --config.image.blur=false --config.image.grayscale=false
     --config.image.equalize=false --config.image.binarize=false)
run() {  # name, extra flags...
  local name=$1; shift
  echo "== $name =="
  $PY finetune/finetune.py "${COMMON[@]}" --workdir "$OUT/$name" "$@" 2>&1 \
    | grep -E "^macro AUROC|error" || true
}
run eianet
run raw_images "${RAW[@]}"
run no_attention --config.spatial_attention=false
run bce --config.loss=bce
