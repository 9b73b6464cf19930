"""Supervised fine-tuning entry point (one process per host).

  python finetune/finetune.py --config configs/finetune.py:backbone=net1d,fs=100 \
      --workdir runs/ft_net1d --config.data='ptbxl:../shared/data/ptbxl?fs=100'

Writes WORKDIR/split<k>/ (metrics.jsonl, validation.jsonl, best/ checkpoint,
predictions_test.csv), WORKDIR/predictions.csv (out-of-fold, for finetune/report.py) and
results.json, and prints the report with macro AUROC and its 95% CI. Rerunning the same
command in the same workdir resumes.
"""

import sys

from ecgjax import cli
from ecgjax import launch

FLAGS = launch.define_flags("configs/finetune.py[:args]",
                            "directory for checkpoints, metrics, predictions")


def main(argv):
  del argv
  # Imported here so grain's spawned workers, which re-import this file, stay light.
  from ecgjax.finetune import trainer
  launch.setup_process(FLAGS)  # also the compilation cache (--compilation_cache)
  try:
    trainer.finetune(FLAGS.config.value, FLAGS.workdir.value)
  except trainer.Preempted as e:
    # Every process saved the same step: a clean stop, resumed by rerunning the command.
    print(f"stopped: {e}; rerun the same command to resume", file=sys.stderr)
    sys.exit(0)


def run() -> None:
  """Console entry point (`ecgjax-finetune`; `python finetune/finetune.py` in a checkout)."""
  cli.run(main)


if __name__ == "__main__":
  run()
