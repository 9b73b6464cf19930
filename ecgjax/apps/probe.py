"""Probes of frozen embeddings: one or several sources, any protocol, a full report.

Explicit split (two data specs, or test folds of one set):
  python finetune/probe.py --export runs/stmem_b/export \
      --train "ptbxl:/data/ptbxl?folds=1-7" --test "ptbxl:/data/ptbxl?folds=8" --json
  python finetune/probe.py --embeddings emb.npz --split_folds 8
Grouped K-fold by patient (the default without a split), 10 stratified 80/20 reshuffles:
  python finetune/probe.py --export DIR --data "ptbxl:/data/ptbxl" --protocol groupcv --folds 5
  python finetune/probe.py --embeddings a.npz --embeddings b.npz --protocol reshuffle \
      --probe xgboost --repeats 10
Label efficiency, report and predictions:
  ... --train_sizes 25,50,100,all --seeds 0,1 --report out/ --predictions_out out/pred.csv

Several --export / --embeddings are fused: each min-max normalised on the training split,
then concatenated. Prints a table of AUROC/AUPRC (95% bootstrap CIs) per label and the macro
means; with --json the last stdout line is one JSON object (NaN written as null).
"""

import json
import time

from absl import flags, logging

from ecgjax import cli
from ecgjax import launch

_EXPORT = flags.DEFINE_multi_string("export", [], "export directory (WORKDIR/export); "
                                    "repeat to fuse several encoders")
_EMBEDDINGS = flags.DEFINE_multi_string("embeddings", [], "embeddings NPZ from "
                                        "finetune/embed.py; repeatable, fused with --export")
_DATA = flags.DEFINE_string("data", None, "data spec of one labelled set (CV, reshuffles, "
                            "--split_folds)")
_TRAIN = flags.DEFINE_string("train", None, "data spec of the split the probe is fitted on")
_TEST = flags.DEFINE_string("test", None, "data spec of the split it is scored on")
_SPLIT_FOLDS = flags.DEFINE_string("split_folds", None, "test folds of one set, e.g. 8 or "
                                   "9-10 (the others train)")
_PROTOCOL = flags.DEFINE_enum("protocol", None, ["split", "reshuffle", "groupcv"],
                              "default: split when a split is given, else groupcv")
_FOLDS = flags.DEFINE_integer("folds", 5, "folds of --protocol groupcv")
_REPEATS = flags.DEFINE_integer("repeats", None, "repeats per seed (default 10 for reshuffle, "
                                "1 otherwise)")
_TEST_FRACTION = flags.DEFINE_float("test_fraction", 0.2, "test share of each reshuffle")
_TRAIN_SIZES = flags.DEFINE_string("train_sizes", None, "label-efficiency ladder of training "
                                   "record counts, e.g. 25,50,100,all")
_MIN_POS = flags.DEFINE_integer("min_positives", 3, "positives and negatives per label a "
                                "label-efficiency subsample keeps at least")
_PROBE = flags.DEFINE_string("probe", "logreg", "logreg, xgboost or mlp "
                             "(registry: ecgjax.eval.PROBES)")
_LABELS = flags.DEFINE_list("labels", [], "probe only these labels (one = a binary task)")
_SEED = flags.DEFINE_integer("seed", 0, "seed of splits, probes and the bootstrap")
_SEEDS = flags.DEFINE_list("seeds", [], "several seeds, e.g. 0,1: the protocol is repeated "
                           "per seed (overrides --seed)")
_THRESHOLD = flags.DEFINE_string("threshold", "youden", "operating point: youden, a "
                                 "probability (0.5) or a target sensitivity (sens=0.9)")
_BOOTSTRAP = flags.DEFINE_integer("bootstrap", 1000, "bootstrap resamples for the 95% CIs")
_CAL_BINS = flags.DEFINE_integer("calibration_bins", 10, "bins of the calibration curve")
_CAL_STRATEGY = flags.DEFINE_enum("calibration_strategy", "quantile", ["quantile", "uniform"],
                                  "calibration bins with equal counts or equal widths")
_REPORT = flags.DEFINE_string("report", None, "directory for report.json, report.md, PNGs")
_PREDICTIONS_OUT = flags.DEFINE_string("predictions_out", None, "write the (out-of-fold) "
                                       "predictions as CSV (finetune/report.py reads it)")
_TSNE = flags.DEFINE_bool("tsne", True, "t-SNE figure in the report")
_TSNE_MAX = flags.DEFINE_integer("tsne_max", 500, "records in the t-SNE")
_JSON = flags.DEFINE_bool("json", False, "print the results as one JSON object, last line")
_BATCH = flags.DEFINE_integer("batch_size", 64, "records per encoder call")
_N_CROPS = flags.DEFINE_integer("n_crops", 0, "crops per record, embeddings averaged; "
                                "0 = the model's reference (ST-MEM: 3 on longer records)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bars (only on a terminal)")


def _seeds() -> list[int]:
  try:
    seeds = [int(s) for s in _SEEDS.value] if _SEEDS.value else [_SEED.value]
  except ValueError:
    raise ValueError(f"--seeds must be integers, got {','.join(_SEEDS.value)}") from None
  if len(set(seeds)) != len(seeds):
    raise ValueError(f"--seeds repeats a seed: {seeds}")
  return seeds


def _protocol() -> tuple[str, int]:
  explicit = bool(_TRAIN.value or _SPLIT_FOLDS.value)
  protocol = _PROTOCOL.value or ("split" if explicit else "groupcv")
  if protocol == "split" and not explicit:
    raise ValueError("--protocol split needs a split: --train and --test, or --split_folds")
  if protocol != "split" and explicit:
    raise ValueError(f"--protocol {protocol} splits one set itself: drop --train/--test/"
                     "--split_folds (or use --protocol split)")
  if _SPLIT_FOLDS.value and _TRAIN.value:
    raise ValueError("give --split_folds or --train/--test, not both")
  repeats = _REPEATS.value or (10 if protocol == "reshuffle" else 1)
  if repeats < 1:
    raise ValueError(f"--repeats must be >= 1, got {repeats}")
  return protocol, repeats


def main(argv):
  del argv
  launch.enable_compilation_cache(launch.default_cache_dir())
  # Imported here: --help and flag errors should not pay for JAX and scikit-learn.
  import numpy as np  # pylint: disable=g-import-not-at-top
  from ecgjax import data  # pylint: disable=g-import-not-at-top
  from ecgjax import eval as eval_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.eval import calibration, experiment, inputs, protocols  # pylint: disable=g-import-not-at-top
  from ecgjax.eval import predictions as pred_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.eval import report as report_lib  # pylint: disable=g-import-not-at-top

  split_name = "--train"

  def test_mask_of(table, mask):
    if _SPLIT_FOLDS.value:
      folds = data.parse_folds(_SPLIT_FOLDS.value)
      mask = np.isin(table.fold, folds)
      present = sorted(set(table.fold.tolist()))
      if mask.all() or not mask.any():
        raise ValueError(f"--split_folds {_SPLIT_FOLDS.value} leaves no "
                         f"{'training' if mask.all() else 'test'} records (folds present: "
                         f"{present})")
    return mask

  def precheck(table, mask):
    # Label problems of an explicit split show in the labels: report them before embedding.
    if protocol == "split":
      train = ~test_mask_of(table, mask)
      eval_lib.probes.check_labels(table.labels[train], table.label_names, split_name)

  try:
    seeds = _seeds()
    protocol, repeats = _protocol()
    if _SPLIT_FOLDS.value:
      split_name = f"the training folds (all but {_SPLIT_FOLDS.value})"
    calibration.parse_threshold(_THRESHOLD.value)
    sizes = protocols.parse_train_sizes(_TRAIN_SIZES.value) if _TRAIN_SIZES.value else None
    if _N_CROPS.value < 0:
      raise ValueError(f"--n_crops must be >= 0 (0 = automatic), got {_N_CROPS.value}")
    eval_lib.get_probe(_PROBE.value)
    inp = inputs.gather(exports=_EXPORT.value, files=_EMBEDDINGS.value, data=_DATA.value,
                        train=_TRAIN.value, test=_TEST.value, batch_size=_BATCH.value,
                        n_crops=_N_CROPS.value, progress=_PROGRESS.value,
                        labels=_LABELS.value, check=precheck)
    table = inp.table
    if protocol == "split":
      test = test_mask_of(table, inp.test_mask)
      shared = np.intersect1d(table.patient_id[test], table.patient_id[~test])
      if shared.size:
        logging.warning("%d patient(s) have records on both sides of the split (e.g. %s)",
                        shared.size, shared[:3].tolist())
    splits = protocols.make_splits(
        protocol, table.labels, table.patient_id, seeds=seeds, repeats=repeats,
        n_folds=_FOLDS.value, test_fraction=_TEST_FRACTION.value,
        test_mask=test_mask_of(table, inp.test_mask) if protocol == "split" else None)
    t0 = time.perf_counter()
    pred = experiment.run_probe(table, inp.blocks, splits, probe=_PROBE.value,
                                on_single_class="raise" if protocol == "split" else "nan",
                                split_name=split_name)
    logging.info("%s probe over %d split(s) in %.1fs", _PROBE.value, len(splits),
                 time.perf_counter() - t0)
  except (ValueError, OSError) as e:
    cli.fail(str(e))

  meta = {
      "title": f"{_PROBE.value} probe of {', '.join(inp.names)}",
      "protocol": protocol,
      "protocol_details": {"folds": _FOLDS.value if protocol == "groupcv" else None,
                           "repeats": repeats, "seeds": seeds,
                           "test_fraction": _TEST_FRACTION.value if protocol == "reshuffle"
                           else None, "split_folds": _SPLIT_FOLDS.value,
                           "n_splits": len(splits)},
      "probe": _PROBE.value,
      "sources": inp.names,
      "export": (inp.exports[0] if len(inp.exports) == 1 else inp.exports) or None,
      "embeddings_files": inp.files,
      "data": inp.specs,
      "n_train": int(round(np.mean([sp.train.size for sp in splits]))),
      "n_test": int(round(np.mean([sp.test.size for sp in splits]))),
  }
  try:
    if _PREDICTIONS_OUT.value:
      pred_lib.write_csv(_PREDICTIONS_OUT.value, pred)
      logging.info("wrote predictions to %s", _PREDICTIONS_OUT.value)
    r = report_lib.build(pred, threshold=_THRESHOLD.value, n_bootstrap=_BOOTSTRAP.value,
                         seed=seeds[0], calibration_bins=_CAL_BINS.value,
                         calibration_strategy=_CAL_STRATEGY.value, meta=meta)
    if sizes:
      r["label_efficiency"] = experiment.label_efficiency(
          table, inp.blocks, splits, sizes, probe=_PROBE.value, min_positives=_MIN_POS.value)
  except (ValueError, OSError) as e:
    cli.fail(str(e))

  print(report_lib.text_table(
      r, title=f"{_PROBE.value} probe, {protocol}: {meta['n_train']} train / "
               f"{meta['n_test']} test records per split, {len(splits)} split(s); "
               f"{', '.join(inp.names)}"))
  if _REPORT.value:
    emb = dict(zip(inp.names, inp.blocks)) if _TSNE.value else None
    paths = report_lib.write(r, _REPORT.value, embeddings=emb, tsne_labels=table.labels,
                             tsne_max=_TSNE_MAX.value, seed=seeds[0])
    print(f"wrote {len(paths)} report files to {_REPORT.value}")
  if _JSON.value:
    print(json.dumps(report_lib.json_safe(report_lib.summary(r)), allow_nan=False),
          flush=True)


def run() -> None:
  """Console entry point (`ecgjax-probe`; `python finetune/probe.py` in a checkout)."""
  cli.run(main)


if __name__ == "__main__":
  run()
