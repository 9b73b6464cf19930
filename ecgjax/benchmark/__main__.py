"""python -m ecgjax.benchmark: PTB-XL's tasks x linear / attention / fine-tune for exports.

  python -m ecgjax.benchmark --export runs/a/export [--export runs/b/export] \
      --data ptbxl:PATH --tasks all,diagnostic,subdiagnostic,superdiagnostic,form,rhythm \
      --modes linear,attention,finetune --out runs/bench
  python -m ecgjax.benchmark --quick --data ptbxl:../shared/data/ptbxl --out runs/bench_quick

Writes OUT/results.json and OUT/results.md (macro AUROC [95% CI] per task and mode, the
published uniform-benchmark numbers beside ours where the model has them) after every finished
(export, task, mode), and OUT/runs/<model>/<task>/ (embeddings, predictions, the fine-tune
workdir); a rerun with the same OUT skips what is done. --quick: tasks superdiagnostic, form
and rhythm, every mode, short fine-tunes (5 epochs), 3 CV folds, 200 bootstrap resamples; with
no --export it benchmarks a randomly initialised `mu` ST-MEM encoder (the floor any
pretraining must beat).
"""

from absl import flags

from ecgjax import cli

_EXPORTS = flags.DEFINE_multi_string("export", [], "export directory (repeatable)")
_DATA = flags.DEFINE_string("data", None, "ptbxl:DIR (the tasks set labels=)")
_TASKS = flags.DEFINE_list("tasks", None, "tasks (default: all six; --quick: "
                           "superdiagnostic,form,rhythm)")
_MODES = flags.DEFINE_list("modes", ["linear", "attention", "finetune"], "probing modes")
_OUT = flags.DEFINE_string("out", None, "output directory (a rerun resumes in it)")
_QUICK = flags.DEFINE_bool("quick", False, "the short CPU version (module docstring)")
_FOLDS = flags.DEFINE_integer("cv_folds", 5, "CV folds when the data lacks folds 9 and 10")
_EPOCHS = flags.DEFINE_integer("finetune_epochs", 10, "fine-tuning epochs")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "bootstrap resamples for the CIs")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the splits, probes and fine-tunes")
flags.mark_flags_as_required(["data", "out"])


def main(argv):
  del argv
  from ecgjax import launch  # pylint: disable=g-import-not-at-top
  from ecgjax.benchmark import run  # pylint: disable=g-import-not-at-top
  from ecgjax.data.formats import ptbxl  # pylint: disable=g-import-not-at-top
  launch.enable_compilation_cache(launch.default_cache_dir())
  quick = _QUICK.value
  tasks = tuple(_TASKS.value or (run.QUICK_TASKS if quick else ptbxl.TASKS))
  exports = list(_EXPORTS.value)
  if quick and not exports:
    exports = [run.random_export(_OUT.value, _SEED.value)]
  plan = run.Plan(exports=exports, data=_DATA.value, out=_OUT.value, tasks=tasks,
                  modes=tuple(_MODES.value), seed=_SEED.value,
                  cv_folds=3 if quick and not flags.FLAGS["cv_folds"].present else _FOLDS.value,
                  bootstrap=200 if quick and not flags.FLAGS["bootstrap"].present
                  else _BOOTSTRAP.value,
                  finetune_epochs=5 if quick and not flags.FLAGS["finetune_epochs"].present
                  else _EPOCHS.value,
                  attention_epochs=15 if quick else 30)
  results = run.run_benchmark(plan)
  print(run.markdown(results))


if __name__ == "__main__":
  cli.run(main)
