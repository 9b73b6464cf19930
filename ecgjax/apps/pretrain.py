"""Self-supervised pretraining entry point (one process per host).

  python pretrain/main.py --config configs/stmem.py:variant=B/75 --workdir runs/stmem_b \
      --config.batch_size=512 --config.data=npy:/data/corpus.npy?fs=250

Rerunning the same command in the same workdir resumes from the newest checkpoint.
"""

from ecgjax import cli

from ecgjax import launch

FLAGS = launch.define_flags("configs/<name>.py[:args]",
                            "directory for checkpoints, metrics and export")


def main(argv):
  del argv
  # Imported here so grain's spawned workers, which re-import this file, stay light.
  from ecgjax.interop import conversion, pretraining, torch_io
  from ecgjax.train import loop
  launch.setup_process(FLAGS)
  try:
    loop.train(FLAGS.config.value, FLAGS.workdir.value)
  except (conversion.ConversionError, torch_io.CheckpointError,
          pretraining.InitFromError) as e:
    # config.init_from that does not fit: the full key report, no traceback.
    cli.fail(f"config.init_from: {e}")
  # Any other ecgjax.errors.UserError (a bad data spec, too many bad records: every process
  # stops at the same step after saving it) is one line and exit 2 through cli.run.


def run() -> None:
  """Console entry point (`ecgjax-pretrain`; `python pretrain/main.py` in a checkout)."""
  cli.run(main)


if __name__ == "__main__":
  run()
