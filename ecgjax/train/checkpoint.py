"""Orbax checkpoints of the train state together with the data iterator's position.

Saves are atomic (orbax writes to a temporary directory and renames it), keep the last
N, and restore onto whatever mesh the restoring run has (abstract targets carry the
new shardings), so a run can move between device counts.
"""

from __future__ import annotations

import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
  """`DIR/checkpoints/<step>/{state,data}` managed by an orbax CheckpointManager."""

  def __init__(self, directory: str, keep: int, with_data: bool = True,
               async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.with_data = with_data
    names = ("state", "data") if with_data else ("state",)
    self.manager = ocp.CheckpointManager(
        self.directory, item_names=names,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
            # A crashed save leaves a temporary directory; clear it rather than trip on it.
            cleanup_tmp_directories=True))

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None."""
    return self.manager.latest_step()

  def save(self, step: int, state: Any, data_iter: Any | None) -> None:
    """Saves asynchronously (device arrays are copied out before this returns)."""
    items = {"state": ocp.args.StandardSave(state)}
    if self.with_data:
      items["data"] = grain.checkpoint.CheckpointSave(data_iter)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)
    logging.info("checkpoint %d queued in %s", step, self.directory)

  def restore(self, step: int, abstract_state: Any, data_iter: Any | None) -> Any:
    """Restores `state` onto the shardings of `abstract_state`; sets `data_iter`'s position."""
    items = {"state": ocp.args.StandardRestore(abstract_state)}
    if self.with_data:
      items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def wait(self) -> None:
    """Blocks until queued saves are on disk."""
    self.manager.wait_until_finished()

  def close(self) -> None:
    """Finishes pending saves and releases the manager."""
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_like(state: Any, shardings: Any) -> Any:
  """`ShapeDtypeStruct`s of `state` carrying `shardings` (restore targets)."""
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      state, shardings)
