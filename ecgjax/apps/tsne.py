"""t-SNE of several models' embeddings of the same records, one row of panels per model.

  python finetune/embed.py --export runs/stmem/export --data ptbxl:PATH --out stmem.npz
  python finetune/embed.py --export runs/ecgfm/export --data ptbxl:PATH --out ecgfm.npz
  python finetune/tsne.py --embeddings stmem.npz --embeddings ecgfm.npz --label MI \\
      --points 500 --out tsne.png

The prehospital-ACS study's figure: `--points` records (default 500) drawn balanced, half
with the label and half without (250 per class), the SAME records for every model, each
model's embeddings standardised and mapped to 2-D by t-SNE (perplexity 30, PCA init, seeded),
coloured by the label. Files must come from the same data (records are matched by record_id;
those missing from any file are left out). Also writes OUT's stem + `.csv` with the sampled
record ids and every model's 2-D coordinates.
"""

import csv
import os

from absl import flags

from ecgjax import cli

_EMBEDDINGS = flags.DEFINE_multi_string("embeddings", [], "embeddings NPZ (finetune/embed.py), "
                                        "one per model; repeat the flag")
_NAMES = flags.DEFINE_list("names", [], "panel names, one per --embeddings (default: file "
                           "names)")
_LABEL = flags.DEFINE_string("label", None, "the label the points are balanced on and coloured by")
_POINTS = flags.DEFINE_integer("points", 500, "records drawn (half positive when possible)")
_SEED = flags.DEFINE_integer("seed", 0, "sampling and t-SNE seed")
_OUT = flags.DEFINE_string("out", "tsne.png", "output PNG")
flags.mark_flags_as_required(["label"])


def main(argv):
  del argv
  from ecgjax.eval import embed as embed_lib  # pylint: disable=g-import-not-at-top
  from ecgjax.eval import plots  # pylint: disable=g-import-not-at-top

  if not _EMBEDDINGS.value:
    cli.fail("give at least one --embeddings file (finetune/embed.py writes them)")
  if _NAMES.value and len(_NAMES.value) != len(_EMBEDDINGS.value):
    cli.fail(f"--names has {len(_NAMES.value)} names for {len(_EMBEDDINGS.value)} files")
  if _POINTS.value < 10:
    cli.fail(f"--points={_POINTS.value}: t-SNE needs at least 10 points")
  sets = []
  for path in _EMBEDDINGS.value:
    if not os.path.isfile(path):
      cli.fail(f"no such embeddings file: {path}")
    try:
      sets.append(embed_lib.load_embeddings(path))
    except (ValueError, OSError) as e:
      cli.fail(str(e))
  names = _NAMES.value or [os.path.splitext(os.path.basename(p))[0] for p in _EMBEDDINGS.value]
  first = sets[0]
  label_names = [str(l) for l in first["label_names"]]
  if _LABEL.value not in label_names:
    cli.fail(f"--label={_LABEL.value!r} is not in {_EMBEDDINGS.value[0]} (it has "
             f"{label_names})")
  common = set(first["record_id"].tolist())
  for s in sets[1:]:
    common &= set(s["record_id"].tolist())
  ids = [r for r in first["record_id"].tolist() if r in common]
  if len(ids) < 10:
    cli.fail(f"only {len(ids)} records are in every file: are they embeddings of the same data?")
  rows = [{r: i for i, r in enumerate(s["record_id"].tolist())} for s in sets]
  y = first["labels"][[rows[0][r] for r in ids]][:, [label_names.index(_LABEL.value)]]
  emb = {n: s["embeddings"][[m[r] for r in ids]] for n, s, m in zip(names, sets, rows)}
  if len(set(names)) != len(names):
    cli.fail(f"panel names repeat: {names}; pass --names")
  out_dir = os.path.dirname(os.path.abspath(_OUT.value))
  written = plots.tsne_plot(emb, y, [_LABEL.value], out_dir, max_points=_POINTS.value,
                            seed=_SEED.value, return_coordinates=True)
  if written is None:
    cli.fail("too few records for a t-SNE")
  png, idx, coords = written
  if os.path.abspath(png) != os.path.abspath(_OUT.value):
    os.replace(png, _OUT.value)
  table = os.path.splitext(_OUT.value)[0] + ".csv"
  with open(table, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["record_id", _LABEL.value] + [f"{n}_{a}" for n in names for a in "xy"])
    for k, i in enumerate(idx):
      w.writerow([ids[i], int(y[i, 0] > 0.5)]
                 + [f"{v:.4f}" for n in names for v in coords[n][k]])
  n_pos = int((y[idx, 0] > 0.5).sum())
  print(f"wrote {_OUT.value} and {table}: {len(idx)} records ({n_pos} {_LABEL.value}, "
        f"{len(idx) - n_pos} without), {len(names)} model(s)")


def run() -> None:
  """Console entry point (`ecgjax-tsne`; `python finetune/tsne.py` in a checkout)."""
  cli.run(main)


if __name__ == "__main__":
  run()
