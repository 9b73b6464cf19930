"""Self-supervised pretraining entry point (one process per host).

  python pretrain/main.py --config configs/stmem.py:variant=B/75 --workdir runs/stmem_b \
      --config.batch_size=512 --config.data=npy:/data/corpus.npy?fs=250

Rerunning the same command in the same workdir resumes from the newest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/<name>.py[:args]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and export")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "call jax.distributed.initialize() (auto: when a cluster "
                                 "launcher reports several processes)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for launches without a cluster manager")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in a hand launch")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index in a hand launch")
_LIBRARY_LOGS = flags.DEFINE_bool("library_logs", False, "show INFO logs of orbax, jax and grain")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  # Imported here so grain's spawned workers, which re-import this file, stay light.
  from ecgjax.train import loop, mesh, metrics
  if not _LIBRARY_LOGS.value:
    metrics.quiet_library_logs()
  mesh.maybe_initialize_distributed(_DISTRIBUTED.value, _COORDINATOR.value,
                                    _NUM_PROCESSES.value, _PROCESS_ID.value)
  loop.train(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
