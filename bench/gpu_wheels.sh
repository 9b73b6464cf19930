#!/usr/bin/env bash
# Downloads, into .whl/ (git-ignored), the Python 3.12 wheels that the lent GPU machine's image
# lacks and bench/gpu_session.sh needs (the image has jax with CUDA, flax, optax, orbax, torch,
# einops; not grain or ml_collections). Run here, where pip reaches a registry; the GPU machine
# reaches nothing. About 5 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl
for spec in grain==0.2.18 array_record==0.8.6 portpicker==1.6.0 ml_collections==1.1.0 \
            tensorboardX==2.6.5; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$spec"
done
ls -l .whl
