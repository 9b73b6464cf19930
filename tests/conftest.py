"""Test setup: 8 virtual CPU devices, set before any JAX computation runs."""

import os
import pathlib

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Entry points without a workdir cache compiled programs in ~/.cache; tests keep out of $HOME.
os.environ.setdefault("ECGJAX_COMPILATION_CACHE", "off")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """../shared beside the checkout; tests that need it skip when it is absent."""
  if not SHARED.is_dir():
    pytest.skip(f"{SHARED} not found: shared data/golden files are not on this machine")
  return SHARED
