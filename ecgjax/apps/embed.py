"""Embeds a data set with an exported encoder and writes the embeddings NPZ.

  python finetune/embed.py --export runs/stmem_b/export --data "ptbxl:/data/ptbxl" \
      --out runs/stmem_b/ptbxl_embeddings.npz

Every record is brought to the export's input contract (rate, length, leads, filter,
standardisation). --n_crops 0 (the default) follows the model's reference evaluation:
an ST-MEM export averages 3 crops (starts 0/125/250 of a 2500-sample record) when the
records are longer than its 2250-sample window, every other case uses 1 crop.

The file holds embeddings (N, D), record_id, patient_id, fold, labels (N, L) and
label_names (`ecgjax.eval.load_embeddings` reads it back; `finetune/probe.py
--embeddings` probes it). --tokens adds the encoder's token sequences (`tokens`, float16, the
crops' tokens one after the other, and `token_mask`): what the attention-pooling probe
(`ecgjax.eval.attention_probe`) reads.
"""

import time

from absl import flags, logging

from ecgjax import cli
from ecgjax import launch

_EXPORT = flags.DEFINE_string("export", None, "export directory (WORKDIR/export)")
_DATA = flags.DEFINE_string("data", None, "data spec of the records to embed")
_OUT = flags.DEFINE_string("out", None, "output .npz path")
_BATCH = flags.DEFINE_integer("batch_size", 64, "records per encoder call")
_N_CROPS = flags.DEFINE_integer(
    "n_crops", 0, "crops per record, embeddings averaged; 0 = the model's reference "
    "(ST-MEM: 3 when records are longer than the window, else 1)")
_PROGRESS = flags.DEFINE_bool("progress", True, "progress bar (only on a terminal)")
_TOKENS = flags.DEFINE_bool("tokens", False, "also write the encoder's token sequences "
                            "(tokens (N, crops x T, D) float16 and token_mask), the "
                            "attention-pooling probe's input")
flags.mark_flags_as_required(["export", "data", "out"])


def main(argv):
  del argv
  launch.enable_compilation_cache(launch.default_cache_dir())
  from ecgjax import data
  from ecgjax import eval as eval_lib
  from ecgjax import export as export_lib

  try:
    if _N_CROPS.value < 0:
      raise ValueError(f"--n_crops must be >= 0 (0 = automatic), got {_N_CROPS.value}")
    export = export_lib.load_export(_EXPORT.value)
    eval_lib.check_export(export)
    source = data.open_source(_DATA.value)
    n_crops = _N_CROPS.value or eval_lib.default_n_crops(export, source)
  except (ValueError, OSError) as e:
    cli.fail(str(e))
  logging.info("embedding %d records of %s with %s %s, %d crop(s) per record", len(source),
               _DATA.value, export.config["model"], export.config["variant"], n_crops)
  t0 = time.perf_counter()
  try:
    d = eval_lib.embed_source(export, source, batch_size=_BATCH.value, n_crops=n_crops,
                              progress=_PROGRESS.value, tokens=_TOKENS.value)
  except ValueError as e:
    cli.fail(str(e))
  path = eval_lib.save_embeddings(_OUT.value, d)
  logging.info("embedded %d records in %.1fs", len(source), time.perf_counter() - t0)
  extra = (f" and {d['tokens'].shape[1]} x {d['tokens'].shape[2]} tokens each"
           if "tokens" in d else "")
  print(f"wrote {d['embeddings'].shape[0]} x {d['embeddings'].shape[1]} embeddings "
        f"({n_crops} crop(s) per record){extra} to {path}")


def run() -> None:
  """Console entry point (`ecgjax-embed`; `python finetune/embed.py` in a checkout)."""
  cli.run(main)


if __name__ == "__main__":
  run()
