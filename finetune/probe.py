"""Linear probe of an exported encoder: embed train/test, fit one probe per label, report.

  python finetune/probe.py --export runs/stmem_b/export \
      --train "ptbxl:/data/ptbxl?folds=1-8" --test "ptbxl:/data/ptbxl?folds=10" \
      --probe logreg --json

Prints a table of AUROC/AUPRC/n_pos per label and the macro means; with --json the last
line of stdout is one JSON object (NaN written as null) for scripts to parse.
"""

import json
import math
import time

from absl import app, flags, logging

_EXPORT = flags.DEFINE_string("export", None, "export directory (WORKDIR/export)")
_TRAIN = flags.DEFINE_string("train", None, "data spec of the split the probe is fitted on")
_TEST = flags.DEFINE_string("test", None, "data spec of the split it is scored on")
_PROBE = flags.DEFINE_string("probe", "logreg", "probe name (registry: ecgjax.eval.PROBES)")
_JSON = flags.DEFINE_bool("json", False, "print the results as one JSON object, last line")
_BATCH = flags.DEFINE_integer("batch_size", 64, "records per encoder call")
_N_CROPS = flags.DEFINE_integer("n_crops", 1, "crops per record, embeddings averaged")
_SEED = flags.DEFINE_integer("seed", 0, "seed of the probe's inner cross-validation")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars (only on a terminal)")
flags.mark_flags_as_required(["export", "train", "test"])


def _json_safe(value):
  """NaN -> None recursively: strict JSON has no NaN."""
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, dict):
    return {k: _json_safe(v) for k, v in value.items()}
  return value


def main(argv):
  del argv
  # Imported here: --help and flag errors should not pay for JAX and scikit-learn.
  from ecgjax import data
  from ecgjax import eval as eval_lib
  from ecgjax.train import export as export_lib

  try:
    eval_lib.get_probe(_PROBE.value)
    export = export_lib.load_export(_EXPORT.value)
    sources = {flag: data.open_source(spec)
               for flag, spec in (("--train", _TRAIN.value), ("--test", _TEST.value))}
    # Label problems show in the metadata: report them before minutes of embedding.
    eval_lib.check_splits(sources["--train"].label_names, sources["--test"].label_names,
                          sources["--train"].metadata()["labels"], train_name="--train",
                          test_name="--test")
  except (ValueError, OSError) as e:
    raise SystemExit(f"probe.py: error: {e}") from None
  logging.info("export %s: %s %s, %d-d embeddings", export.directory, export.config["model"],
               export.config["variant"], export.dim)

  embedded = {}
  for flag, source in sources.items():
    t0 = time.perf_counter()
    embedded[flag] = eval_lib.embed_source(export, source, batch_size=_BATCH.value,
                                           n_crops=_N_CROPS.value, progress=_PROGRESS.value)
    logging.info("%s: embedded %d records in %.1fs", flag, len(source),
                 time.perf_counter() - t0)

  t0 = time.perf_counter()
  try:
    result = eval_lib.evaluate(embedded["--train"], embedded["--test"], probe=_PROBE.value,
                               seed=_SEED.value, train_name="--train", test_name="--test")
  except eval_lib.ProbeError as e:
    raise SystemExit(f"probe.py: error: {e}") from None
  logging.info("probe %s fitted and scored in %.1fs", _PROBE.value, time.perf_counter() - t0)

  print(eval_lib.format_table(
      result, title=f"{_PROBE.value} probe, {result['n_train']} train / "
                    f"{result['n_test']} test records, export {export.directory}"))
  if _JSON.value:
    out = {k: result[k] for k in ("macro_auroc", "macro_auprc", "per_label", "n_train",
                                  "n_test", "n_excluded")}
    out.update(export=export.directory, probe=_PROBE.value)
    print(json.dumps(_json_safe(out), allow_nan=False), flush=True)


if __name__ == "__main__":
  app.run(main)
