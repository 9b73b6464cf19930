# `make demo`: set up .venv and run a short ST-MEM pretraining + linear probe on built-in data.
# `make test`: set up .venv and run the test suite (CPU, 8 virtual devices).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo
PYTEST_ARGS ?=
# Two pytest workers: most tests are single-threaded Python/XLA compiles, so both cores stay busy
# (CI machines have two); work stealing lets the idle worker take queued tests from the busy one,
# so a few long end-to-end tests do not leave one core idle at the end. PYTEST_WORKERS=0 runs
# in one process.
PYTEST_WORKERS ?= 2
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: setup demo test wheel-check bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	@# Byte-compiled at install (pip's default): environments with PYTHONDONTWRITEBYTECODE=1,
	@# CI's among them, would otherwise recompile every imported module in every test process.
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[test]"
	@# Optional torch (the `torch` extra) for the weight-import tests: the CPU build by its exact
	@# name, so a machine without that wheel fails fast (and those tests skip) instead of pulling
	@# GBs of CUDA packages.
	@# Under CI (CI=true) a failed torch install fails the setup: the weight-import and
	@# reference tests must never turn into silent skips there.
	$(BIN)/python -m pip install -q -c constraints.txt "torch==2.13.0+cpu" || { \
	  if [ "$$CI" = "true" ]; then \
	    echo "error: torch 2.13.0+cpu could not be installed under CI;" \
	      "the weight-import tests need it" >&2; \
	    exit 1; \
	  fi; \
	  echo "note: torch 2.13.0 CPU could not be installed; the weight-import tests will skip"; }
	touch $@

PROBE := --probe logreg --train "synthetic:800?seed=7&folds=1-8" --test "synthetic:800?seed=7&folds=9-10"

demo: setup
	rm -rf $(DEMO_DIR)
	$(BIN)/python pretrain/main.py --config configs/stmem.py:variant=mu,runlocal --workdir $(DEMO_DIR)/stmem
	@echo "== linear probe on the pretrained encoder =="
	$(BIN)/python finetune/probe.py --export $(DEMO_DIR)/stmem/export $(PROBE)
	@echo "== the same probe on a randomly initialised encoder (baseline) =="
	$(BIN)/python pretrain/main.py --config configs/stmem.py:variant=mu,runlocal \
	  --workdir $(DEMO_DIR)/random --config.total_steps=0 2>/dev/null
	$(BIN)/python finetune/probe.py --export $(DEMO_DIR)/random/export $(PROBE)

test: setup
	@# The suite starts ~100 Python processes (entry points, grain workers); byte-compile our
	@# own modules once, since PYTHONDONTWRITEBYTECODE (set on CI) stops imports from doing it.
	$(BIN)/python -m compileall -q -j 0 ecgjax configs finetune pretrain > /dev/null
	$(BIN)/python -m pytest -q $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS) --dist worksteal) $(PYTEST_ARGS)

# Build the wheel, install it into a fresh venv, run the programs outside the checkout.
wheel-check:
	PYTHON=$(PYTHON) bash .ci/wheel_check.sh

bench: setup
	$(BIN)/python bench/pretrain_step.py --model st_mem --variant B/75 --batch 8 --steps 5

clean:
	rm -rf $(VENV) runs .pytest_cache
