"""Explains a fine-tuned model's predictions on a data set: Grad-CAM and input attributions.

  python finetune/explain.py --run runs/eianet --data image:runs/printouts --method gradcam \
      --out runs/eianet/gradcam [--split 0] [--target NORM] [--limit 50] [--threshold 0.4]
  python finetune/explain.py --export runs/eianet/split0/export --data image:runs/printouts \
      --out runs/eianet/gradcam_export

--method gradcam (CNNs), gradient (gradient x input), integrated_gradients (--steps,
--baseline zero|blur; the completeness error is reported), occlusion (signals: per lead, or per
lead and --window_s window) or attention (transformer encoders: ST-MEM and the hybrid, leads x
patches; ECG-FM, time frames; attention rollout, class-free, so --export may also be an
encoder's export; OUT/attention.npz also holds the per-token map as `tokens`). For each record: OUT/<record>.png (printouts: the model's input, the
map over it, and the thresholded view EIANet's figures show; signals: the model's input on the
12-lead grid, one panel per lead, the attribution as a colour band under each trace), and
OUT/<method>.npz with record_id, the attributions (`attributions`; Grad-CAM also as `cam`), the
predicted probabilities and the target label.
--run is a finished finetune/finetune.py workdir (its split's validation-selected model);
--export a classifier's export (a fine-tuned Net1D/ResNet writes one per split,
WORKDIR/split<k>/export), which needs nothing of the run.
"""

import os
import re

from absl import flags
import numpy as np

from ecgjax import cli
from ecgjax.errors import UserError

_RUN = flags.DEFINE_string("run", None, "finished fine-tuning workdir")
_EXPORT = flags.DEFINE_string("export", None, "a classifier's export (WORKDIR/split<k>/export)")
_DATA = flags.DEFINE_string("data", None, "data spec of the records to explain")
_METHOD = flags.DEFINE_enum("method", "gradcam",
                            ["gradcam", "gradient", "integrated_gradients", "occlusion",
                             "attention"],
                            "explanation method")
_STEPS = flags.DEFINE_integer("steps", 32, "integrated_gradients: path steps")
_BASELINE = flags.DEFINE_enum("baseline", "zero", ["zero", "blur"],
                              "integrated_gradients / occlusion: the reference input")
_WINDOW = flags.DEFINE_float("window_s", 0.0, "occlusion: window in seconds (0: whole leads)")
_OUT = flags.DEFINE_string("out", None, "output directory")
_SPLIT = flags.DEFINE_integer("split", 0, "which split's model")
_TARGET = flags.DEFINE_string("target", None, "label to explain (default: the first)")
_LIMIT = flags.DEFINE_integer("limit", 0, "explain only the first N records (0: all)")
_BATCH = flags.DEFINE_integer("batch", 8, "records per forward/backward pass")
_THRESHOLD = flags.DEFINE_float("threshold", 0.4, "thresholded view: map values above this")
flags.mark_flags_as_required(["data", "out"])
flags.mark_flags_as_mutual_exclusive(["run", "export"], required=True)


def _stem(record_id: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", record_id).strip("._") or "record"


def _save_image_panel(path: str, x: np.ndarray, cam: np.ndarray, threshold: float) -> None:
  import cv2  # pylint: disable=g-import-not-at-top
  from ecgjax import explain  # pylint: disable=g-import-not-at-top
  img = np.repeat(x, 3, -1) if x.shape[-1] == 1 else x
  panel = np.concatenate([np.round(255 * img).astype(np.uint8), explain.overlay(x, cam),
                          explain.thresholded(x, cam, threshold)], axis=1)
  cv2.imwrite(path, panel[..., ::-1])


def _save_signal_panel(path: str, x: np.ndarray, values: np.ndarray, leads, fs: float,
                       title: str) -> None:
  """The model's input on the 12-lead grid (12x1: one panel per lead), `values` (leads, T) or
  (T,) as a colour band under each trace."""
  from ecgjax.images import printout  # pylint: disable=g-import-not-at-top
  values = np.broadcast_to(values, x.shape) if values.ndim == 1 else values
  # The input is usually standardised: draw it at most +-1.5 "mV" tall so panels do not overlap.
  scale = 1.0 / max(1.0, float(np.percentile(np.abs(x), 99)) / 1.5)
  style = printout.STYLES["red"]
  pg = printout.page("12x1", style, seconds=x.shape[-1] / fs)
  fig, ax = printout.figure(pg, style, dpi=100)
  printout.shade(ax, pg, values, fs, leads)
  printout.draw(ax, pg, x * scale, fs, leads, style, title=title)
  printout.save(fig, path)


def main(argv):
  del argv
  from ecgjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from ecgjax import explain  # pylint: disable=g-import-not-at-top
  from ecgjax.finetune import load  # pylint: disable=g-import-not-at-top

  method = _METHOD.value
  if _EXPORT.value:
    model = (load.load_export_model(_EXPORT.value) if method == "attention"
             else load.load_classifier_export(_EXPORT.value))
  else:
    model = load.load_split(_RUN.value, _SPLIT.value)
  names = list(model.label_names)
  target = _TARGET.value or (names[0] if names else None)
  if names and target not in names:
    raise UserError(f"--target={target!r}: the model's labels are {', '.join(names)}")
  k = names.index(target) if names else None
  source = data_lib.open_source(_DATA.value)
  indices = np.arange(len(source))
  if _LIMIT.value:
    indices = indices[:_LIMIT.value]
  os.makedirs(_OUT.value, exist_ok=True)
  variables = model.variables()
  image = data_lib.batch.is_image(model.preprocessing)
  if image and method in ("occlusion", "attention"):
    raise UserError(f"--method {method} does not apply to {load.describe(model)}, a printout "
                    "model (it takes signals); use gradcam, gradient or integrated_gradients")
  fs = 0.0 if image else float(model.preprocessing.fs)
  ids, maps, probs, errors, tokens = [], [], [], [], []
  for batch in data_lib.eval_batches(source, model.preprocessing, batch_size=_BATCH.value,
                                     indices=indices):
    x = batch[data_lib.batch.model_input_key(batch)][:, 0]  # the first view of each record
    err = None
    if method == "gradcam":
      a = explain.gradcam(model.module, variables, x, target=k)
    elif method == "gradient":
      a = explain.gradient_x_input(model.module, variables, x, k)
    elif method == "integrated_gradients":
      ig = explain.integrated_gradients(model.module, variables, x, k, steps=_STEPS.value,
                                        baseline=_BASELINE.value)
      a, err = ig.attributions, ig.completeness_error
    elif method == "attention":
      try:
        ro = explain.attention_rollout(model.module, variables, x,
                                       lead_idx=getattr(model, "lead_idx", None))
      except explain.NoAttentionError as e:
        raise UserError(f"--method attention does not apply to {load.describe(model)}: "
                        f"{e}") from None
      a = ro.attributions
    else:
      window = int(round(_WINDOW.value * fs)) or None
      occ = explain.occlusion(model.module, variables, x, k, window=window,
                              baseline=_BASELINE.value)
      a = np.repeat(occ, -(-x.shape[-1] // occ.shape[-1]), axis=-1)[..., :x.shape[-1]]
    if image and a.ndim == 4:  # (B, H, W, C) pixel attributions: one map per picture
      a = a.sum(-1)
    p = model.predict(x) if names else None
    for j in np.flatnonzero(batch["valid"]):
      rid = str(batch["record_id"][j])
      path = os.path.join(_OUT.value, f"{_stem(rid)}.png")
      if image:
        m = a[j] if method == "gradcam" else np.abs(a[j]) / max(float(np.abs(a[j]).max()), 1e-12)
        _save_image_panel(path, x[j], m, _THRESHOLD.value)
      else:
        what = (f"{method} of {target} (p = {p[j][k]:.2f})" if p is not None
                else "attention rollout of the embedding (red: above its median token, "
                "blue: below)")
        # Rollout values are all positive and near uniform: drawn as the difference from the
        # record's median token so the band shows where the encoder looks more or less.
        shown = a[j] - np.median(ro.tokens[j]) if method == "attention" else a[j]
        _save_signal_panel(path, x[j], shown, model.preprocessing.leads, fs, f"{rid}: {what}")
      ids.append(rid)
      maps.append(a[j].astype(np.float16 if method == "gradcam" else np.float32))
      if p is not None:
        probs.append(p[j])
      if err is not None:
        errors.append(err[j])
      if method == "attention":
        tokens.append(ro.tokens[j])
  if not ids:
    raise UserError(f"{_DATA.value}: no readable record to explain")
  arrays = dict(record_id=np.array(ids), attributions=np.stack(maps),
                label_names=np.array(names))
  if probs:
    arrays.update(p=np.stack(probs), target=target)
  if tokens:
    arrays["tokens"] = np.stack(tokens)
  if method == "gradcam":
    arrays["cam"] = arrays["attributions"]
  if errors:
    arrays["completeness_error"] = np.asarray(errors)
  np.savez_compressed(os.path.join(_OUT.value, f"{method}.npz"), **arrays)
  extra = (f"; integrated gradients' completeness error: median {np.median(errors):.3g}, "
           f"max {np.max(errors):.3g} (raise --steps if large)" if errors else "")
  what = f"target {target}" if probs else "class-free"
  print(f"explained {len(ids)} records ({method}, {what}) into {_OUT.value}{extra}")


def run() -> None:
  """Console entry point (`ecgjax-explain`; `python finetune/explain.py` in a checkout)."""
  cli.run(main)


if __name__ == "__main__":
  run()
