"""Supervised fine-tuning entry point (one process per host).

  python finetune/finetune.py --config configs/finetune.py:backbone=net1d,fs=100 \
      --workdir runs/ft_net1d --config.data='ptbxl:../shared/data/ptbxl?fs=100'

Writes WORKDIR/split<k>/ (metrics.jsonl, validation.jsonl, best/ checkpoint,
predictions_test.csv), WORKDIR/predictions.csv (out-of-fold, for finetune/report.py) and
results.json, and prints the report with macro AUROC and its 95% CI. Rerunning the same
command in the same workdir resumes.
"""

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "configs/finetune.py[:args]",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics, predictions")
_DISTRIBUTED = flags.DEFINE_enum("distributed", "auto", ["auto", "on", "off"],
                                 "call jax.distributed.initialize() (auto: when a cluster "
                                 "launcher reports several processes)")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "host:port of process 0, for launches without a cluster manager")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in a hand launch")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index in a hand launch")
_CACHE = flags.DEFINE_string("compilation_cache", "workdir",
                             "persistent XLA compilation cache: 'workdir' (WORKDIR/jax_cache: "
                             "the splits of a CV run and a resumed run compile once), a "
                             "directory, or 'off'")
_LIBRARY_LOGS = flags.DEFINE_bool("library_logs", False, "show INFO logs of orbax, jax and grain")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  # Imported here so grain's spawned workers, which re-import this file, stay light.
  import os
  import jax
  from ecgjax.finetune import trainer
  from ecgjax.train import mesh, metrics
  if not _LIBRARY_LOGS.value:
    metrics.quiet_library_logs()
  mesh.maybe_initialize_distributed(_DISTRIBUTED.value, _COORDINATOR.value,
                                    _NUM_PROCESSES.value, _PROCESS_ID.value)
  if _CACHE.value != "off":
    cache = (os.path.join(_WORKDIR.value, "jax_cache") if _CACHE.value == "workdir"
             else _CACHE.value)
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  trainer.finetune(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
