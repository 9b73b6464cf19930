"""Explains a fine-tuned model's predictions on a data set (Grad-CAM for now).

  python finetune/explain.py --run runs/eianet --data image:runs/printouts --method gradcam \
      --out runs/eianet/gradcam [--split 0] [--target NORM] [--limit 50] [--threshold 0.4]
  python finetune/explain.py --export runs/eianet/split0/export --data image:runs/printouts \
      --out runs/eianet/gradcam_export

For each record: OUT/<record>.png (printouts: the model's input, the map over it, and the
thresholded view EIANet's figures show; signals: the map along time under lead II), and
OUT/gradcam.npz with record_id, the maps, the predicted probabilities and the target label.
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
_METHOD = flags.DEFINE_enum("method", "gradcam", ["gradcam"], "explanation method")
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


def _save_signal_panel(path: str, x: np.ndarray, cam: np.ndarray, leads) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  lead = list(leads).index("II") if "II" in leads else 0
  fig, ax = plt.subplots(figsize=(10, 2.2))
  t = np.arange(x.shape[-1])
  ax.imshow(cam[None], aspect="auto", cmap="Reds", extent=(0, len(t), x[lead].min(),
                                                            x[lead].max()), alpha=0.6)
  ax.plot(t, x[lead], color="black", lw=0.7)
  ax.set_yticks([])
  ax.set_xlabel("sample")
  ax.set_title(f"Grad-CAM under lead {leads[lead]}")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  del argv
  from ecgjax import data as data_lib  # pylint: disable=g-import-not-at-top
  from ecgjax import explain  # pylint: disable=g-import-not-at-top
  from ecgjax.finetune import load  # pylint: disable=g-import-not-at-top

  if _EXPORT.value:
    model = load.load_classifier_export(_EXPORT.value)
  else:
    model = load.load_split(_RUN.value, _SPLIT.value)
  names = list(model.label_names)
  target = _TARGET.value or names[0]
  if target not in names:
    raise UserError(f"--target={target!r}: the model's labels are {', '.join(names)}")
  k = names.index(target)
  source = data_lib.open_source(_DATA.value)
  indices = np.arange(len(source))
  if _LIMIT.value:
    indices = indices[:_LIMIT.value]
  os.makedirs(_OUT.value, exist_ok=True)
  variables = model.variables()
  image = data_lib.batch.is_image(model.preprocessing)
  ids, cams, probs = [], [], []
  for batch in data_lib.eval_batches(source, model.preprocessing, batch_size=_BATCH.value,
                                     indices=indices):
    x = batch[data_lib.batch.model_input_key(batch)][:, 0]  # the first view of each record
    cam = explain.gradcam(model.module, variables, x, target=k)
    p = model.predict(x)
    for j in np.flatnonzero(batch["valid"]):
      rid = str(batch["record_id"][j])
      path = os.path.join(_OUT.value, f"{_stem(rid)}.png")
      if image:
        _save_image_panel(path, x[j], cam[j], _THRESHOLD.value)
      else:
        _save_signal_panel(path, x[j], cam[j], model.preprocessing.leads)
      ids.append(rid)
      cams.append(cam[j].astype(np.float16))
      probs.append(p[j])
  if not ids:
    raise UserError(f"{_DATA.value}: no readable record to explain")
  np.savez_compressed(os.path.join(_OUT.value, "gradcam.npz"), record_id=np.array(ids),
                      cam=np.stack(cams), p=np.stack(probs), label_names=np.array(names),
                      target=target)
  print(f"explained {len(ids)} records (target {target}) into {_OUT.value}")


if __name__ == "__main__":
  cli.run(main)
