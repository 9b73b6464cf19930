"""Test setup: 8 virtual CPU devices, set before any JAX computation runs."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
REPO = pathlib.Path(__file__).resolve().parents[1]
# One persistent compilation cache for the whole suite, in-process and in the entry points it
# launches (they read $ECGJAX_COMPILATION_CACHE): many tests compile the same tiny model's step,
# and a cached program loads in a fraction of its compile time. Keys hash the program and the
# jax/jaxlib versions, so a stale entry is never reused. It stays out of $HOME.
CACHE = os.environ.setdefault("ECGJAX_COMPILATION_CACHE",
                              str(REPO / ".pytest_cache" / "jax-compilation-cache"))

# Tests run a handful of steps of many small programs, so XLA's compile time dominates the suite:
# the CPU backend's cheaper LLVM pipeline (optimisation level 1, no expensive passes) compiles
# faster. Level 0 would be faster still but miscompiled a ResNet2D gradient into NaNs (the same
# program op by op is finite), so it is not used. The CPU backend's older loop emitters
# (xla_cpu_use_fusion_emitters=false) compile the same programs ~30% faster than its MLIR fusion
# emitters (tests/test_engine.py: 182 s -> 130 s on 2 cores, losses equal). Runs outside the
# tests keep XLA's defaults; ECGJAX_TEST_XLA_DEFAULTS=1 keeps them here too.
if os.environ.get("ECGJAX_TEST_XLA_DEFAULTS") != "1":
  _flags = os.environ.get("XLA_FLAGS", "")
  if "xla_backend_optimization_level" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_backend_optimization_level=1"
                               " --xla_llvm_disable_expensive_passes=true"
                               " --xla_cpu_use_fusion_emitters=false").strip()

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)
if CACHE != "off":
  jax.config.update("jax_compilation_cache_dir", CACHE)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

import pytest  # noqa: E402

SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """../shared beside the checkout; tests that need it skip when it is absent."""
  if not SHARED.is_dir():
    pytest.skip(f"{SHARED} not found: shared data/golden files are not on this machine")
  return SHARED
