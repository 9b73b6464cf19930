#!/usr/bin/env bash
# The wheel works without the source tree: build it, install it into a fresh venv, and run the
# programs from an empty directory (configs found as ecgjax._configs, console scripts on PATH).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
bin="$work/venv/bin"
"$bin/python" -m pip install -q --disable-pip-version-check wheel 2>&1 | grep -v "^WARNING: Location" || true
"$bin/python" -m pip wheel -q --disable-pip-version-check --no-deps -w "$work/dist" "$repo" \
  2>&1 | grep -v "^WARNING: Location" || true
"$bin/python" -m pip install -q --disable-pip-version-check -c "$repo/constraints.txt" \
  "$work"/dist/ecgjax-*.whl 2>&1 | grep -v "^WARNING: Location" || true
cd "$work"
export JAX_PLATFORMS=cpu
"$bin/python" - <<'PY'
import ecgjax, ecgjax.cli as cli
assert "site-packages" in ecgjax.__file__, ecgjax.__file__
for name in ("stmem", "ecgfm", "hybrid", "finetune"):
  path = cli.builtin_config(name)
  assert path and "site-packages" in path, (name, path)
print("installed ecgjax", ecgjax.__version__, "at", ecgjax.__file__)
PY
SYN="synthetic:200?seed=7&fs=250&seconds=10"
"$bin/ecgjax-pretrain" --config configs/stmem.py:variant=mu,runlocal --workdir run \
  --config.total_steps=10 --config.data="$SYN" --config.log_every_steps=5 > pretrain.log 2>&1 \
  || { tail -n 20 pretrain.log; exit 1; }
test -f run/export/config.json
"$bin/ecgjax-probe" --export run/export --probe logreg \
  --train "synthetic:120?seed=7&folds=1-8" --test "synthetic:120?seed=7&folds=9-10" 2>&1 | tail -n 3
"$bin/python" -m ecgjax.data inspect "synthetic:8" --json > /dev/null 2>&1
"$bin/python" -m ecgjax.interop export --help > /dev/null
"$bin/python" -m ecgjax.serve --help > /dev/null
# absl programs exit 1 after --help: check what they print instead.
help_has() {  # PROGRAM... FLAG: the program's --helpfull lists FLAG
  local flag="${@: -1}" out
  out="$("${@:1:$#-1}" --helpfull 2>&1 || true)"
  grep -q -- "$flag" <<<"$out" || { echo "wheel check: $1 --helpfull lacks $flag" >&2; exit 1; }
}
help_has "$bin/python" -m ecgjax.benchmark --tasks
help_has "$bin/ecgjax-finetune" --workdir
help_has "$bin/ecgjax-embed" --export
echo "wheel check: ok"
