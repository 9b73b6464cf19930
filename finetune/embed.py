"""Embeds a data set with an exported encoder and writes the embeddings NPZ.

  python finetune/embed.py --export runs/stmem_b/export --data "ptbxl:/data/ptbxl" \
      --out runs/stmem_b/ptbxl_embeddings.npz --n_crops 3

The file holds embeddings, record_id, patient_id, fold, labels and label_names
(`ecgjax.eval.load_embeddings` reads it back).
"""

import time

from absl import app, flags, logging

_EXPORT = flags.DEFINE_string("export", None, "export directory (WORKDIR/export)")
_DATA = flags.DEFINE_string("data", None, "data spec of the records to embed")
_OUT = flags.DEFINE_string("out", None, "output .npz path")
_BATCH = flags.DEFINE_integer("batch_size", 64, "records per encoder call")
_N_CROPS = flags.DEFINE_integer("n_crops", 1, "crops per record, embeddings averaged")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bar (only on a terminal)")
flags.mark_flags_as_required(["export", "data", "out"])


def main(argv):
  del argv
  from ecgjax import data
  from ecgjax import eval as eval_lib
  from ecgjax.train import export as export_lib

  try:
    export = export_lib.load_export(_EXPORT.value)
    source = data.open_source(_DATA.value)
  except (ValueError, OSError) as e:
    raise SystemExit(f"embed.py: error: {e}") from None
  t0 = time.perf_counter()
  d = eval_lib.embed_source(export, source, batch_size=_BATCH.value, n_crops=_N_CROPS.value,
                            progress=_PROGRESS.value)
  path = eval_lib.save_embeddings(_OUT.value, d)
  logging.info("embedded %d records in %.1fs", len(source), time.perf_counter() - t0)
  print(f"wrote {d['embeddings'].shape[0]} x {d['embeddings'].shape[1]} embeddings to {path}")


if __name__ == "__main__":
  app.run(main)
