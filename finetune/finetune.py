"""Supervised fine-tuning entry point (one process per host).

  python finetune/finetune.py --config configs/finetune.py:backbone=net1d,fs=100 \
      --workdir runs/ft_net1d --config.data='ptbxl:../shared/data/ptbxl?fs=100'

Writes WORKDIR/split<k>/ (metrics.jsonl, validation.jsonl, best/ checkpoint,
predictions_test.csv), WORKDIR/predictions.csv (out-of-fold, for finetune/report.py) and
results.json, and prints the report with macro AUROC and its 95% CI. Rerunning the same
command in the same workdir resumes.
"""

import sys

from absl import flags

from ecgjax import cli
from ecgjax import launch

FLAGS = launch.define_flags("configs/finetune.py[:args]",
                            "directory for checkpoints, metrics, predictions")
_CACHE = flags.DEFINE_string("compilation_cache", "workdir",
                             "persistent XLA compilation cache: 'workdir' (WORKDIR/jax_cache: "
                             "the splits of a CV run and a resumed run compile once), a "
                             "directory, or 'off'")


def main(argv):
  del argv
  # Imported here so grain's spawned workers, which re-import this file, stay light.
  import os
  import jax
  from ecgjax.finetune import trainer
  launch.setup_process(FLAGS)
  if _CACHE.value != "off":
    cache = (os.path.join(FLAGS.workdir.value, "jax_cache") if _CACHE.value == "workdir"
             else _CACHE.value)
    jax.config.update("jax_compilation_cache_dir", os.path.abspath(cache))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
  try:
    trainer.finetune(FLAGS.config.value, FLAGS.workdir.value)
  except trainer.Preempted as e:
    # Every process saved the same step: a clean stop, resumed by rerunning the command.
    print(f"stopped: {e}; rerun the same command to resume", file=sys.stderr)
    sys.exit(0)


if __name__ == "__main__":
  cli.run(main)
