"""Device mesh, parameter shardings and host-to-device batch placement.

Everything is global-view `jax.jit` over one mesh axis, "data": batches are split
along it; parameters are replicated, or (param_sharding="fsdp") each array is split
along its largest dimension divisible by the device count.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"
PARAM_SHARDINGS = ("replicated", "fsdp")


def maybe_initialize_distributed(mode: str = "auto", coordinator_address: str | None = None,
                                 num_processes: int | None = None,
                                 process_id: int | None = None) -> None:
  """Calls `jax.distributed.initialize()` when launched as one of several processes.

  "auto" initialises when a coordinator address is given or a cluster launcher reports
  several processes (SLURM, Open MPI; TPU pods and GKE are detected by JAX itself once
  called with "on"); "off" never initialises. Explicit arguments serve hand launches,
  e.g. two processes on one machine.
  """
  if mode not in ("auto", "on", "off"):
    raise ValueError(f"--distributed must be auto|on|off, got {mode!r}")
  multi = any(int(os.environ.get(k, "1") or 1) > 1
              for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"))
  explicit = coordinator_address or "JAX_COORDINATOR_ADDRESS" in os.environ
  if mode == "on" or (mode == "auto" and (multi or explicit)):
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
    logging.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(),
                 jax.device_count())


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
  """A 1-D data-parallel mesh over `devices` (default: every device of every host)."""
  devices = list(jax.devices()) if devices is None else list(devices)
  return jax.make_mesh((len(devices),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,), devices=devices)


def replicated(mesh: Mesh) -> NamedSharding:
  """Sharding that puts a full copy on every device."""
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the data axis."""
  return NamedSharding(mesh, P(DATA_AXIS))


def _fsdp_spec(shape: tuple[int, ...], n: int) -> P:
  # Largest axis divisible by the device count; small or odd arrays stay replicated
  # because splitting them saves nothing and costs an all-gather.
  if n == 1 or int(np.prod(shape, dtype=np.int64)) < 2 ** 14:
    return P()
  for axis in sorted(range(len(shape)), key=lambda a: -shape[a]):
    if shape[axis] % n == 0:
      spec = [None] * len(shape)
      spec[axis] = DATA_AXIS
      return P(*spec)
  return P()


def state_shardings(abstract_state: Any, mesh: Mesh, param_sharding: str) -> Any:
  """Shardings for a train-state pytree of `jax.ShapeDtypeStruct`s."""
  if param_sharding not in PARAM_SHARDINGS:
    raise ValueError(f"config.param_sharding must be one of {PARAM_SHARDINGS}, "
                     f"got {param_sharding!r}")
  n = mesh.devices.size

  def one(x):
    if param_sharding == "replicated" or not hasattr(x, "shape"):
      return replicated(mesh)
    return NamedSharding(mesh, _fsdp_spec(tuple(x.shape), n))

  return jax.tree.map(one, abstract_state)


def to_global(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Assembles each process's local batch into one global array per key."""
  sharding = batch_sharding(mesh)

  def one(x):
    x = np.asarray(x)
    if x.dtype == np.int64:  # jax runs without x64; keep indices exact and explicit
      x = x.astype(np.int32)
    elif x.dtype == np.float64:
      x = x.astype(np.float32)
    return jax.make_array_from_process_local_data(sharding, x)

  return {k: one(v) for k, v in batch.items() if np.asarray(v).dtype.kind in "fiub"}
