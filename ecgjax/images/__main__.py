"""ECG images command line: render any data spec as 12-lead printouts; show preprocessing.

  python -m ecgjax.images render SPEC OUT_DIR [--layout 3x4+II|3x4|6x2|12x1] [--dpi 200]
      [--format png|pdf] [--style red|pink|green|grey|none] [--overwrite]
  python -m ecgjax.images preprocess IMAGE OUT.png [--stages] [--preset eianet|raw]
      [--height 512 --width 724] [--pdf_dpi 200]

render writes one image (or one-page PDF report) per record into OUT_DIR and OUT_DIR/labels.csv
with the columns file (relative to OUT_DIR), record_id, patient_id, fold, then one 0/1 column
per label; bad records are named, skipped and counted. preprocess writes what the model sees
of IMAGE (PNG/JPEG/TIFF, or a PDF's first page), or with --stages every stage side by side. A
bad spec, file or flag is one line and exit status 2.
"""

from __future__ import annotations

import csv
import os
import re
import sys

from absl import flags
import numpy as np

from ecgjax import cli
from ecgjax.errors import UserError
from ecgjax.images import printout

_LAYOUT = flags.DEFINE_enum("layout", "3x4+II", list(printout.LAYOUTS), "page layout")
_DPI = flags.DEFINE_float("dpi", 200.0, "dots per inch of the PNG (PDF: of its raster parts)")
_FORMAT = flags.DEFINE_enum("format", "png", ["png", "pdf"], "image format")
_STYLE = flags.DEFINE_enum("style", "red", list(printout.STYLES), "grid colours")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "write into an OUT_DIR that has files")
_STAGES = flags.DEFINE_bool("stages", False, "preprocess: every stage side by side")
_PRESET = flags.DEFINE_string("preset", "eianet", "preprocess: image preprocessing preset")
_HEIGHT = flags.DEFINE_integer("height", None, "preprocess: input height (default: preset's)")
_WIDTH = flags.DEFINE_integer("width", None, "preprocess: input width (default: preset's)")
_PDF_DPI = flags.DEFINE_float("pdf_dpi", 200.0, "preprocess: resolution a PDF page is read at")

_USAGE = __doc__.split("\n\n")[1]


def _file_name(record_id: str, taken: set[str]) -> str:
  """A file-system-safe, unique stem for a record id (ids may hold '/')."""
  stem = re.sub(r"[^A-Za-z0-9._-]+", "_", record_id).strip("._") or "record"
  name, k = stem, 1
  while name in taken:
    k += 1
    name = f"{stem}_{k}"
  taken.add(name)
  return name


def render_source(spec: str, out_dir: str, *, layout: str = "3x4+II", dpi: float = 200.0,
                  fmt: str = "png", style: str = "red", overwrite: bool = False,
                  progress: bool = True) -> dict[str, int]:
  """Renders every record of `spec` into `out_dir` with labels.csv; returns the counts."""
  from tqdm import tqdm  # pylint: disable=g-import-not-at-top
  from ecgjax.data import sources  # pylint: disable=g-import-not-at-top
  source = sources.open_source(spec)
  if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
    raise UserError(f"{out_dir} exists and is not empty (--overwrite to write into it)")
  os.makedirs(out_dir, exist_ok=True)
  meta = source.metadata()
  names = list(source.label_names)
  labels = meta.get("labels")
  taken: set[str] = set()
  rows, bad = [], 0
  for i in tqdm(range(len(source)), desc="render", unit="record", disable=not progress):
    try:
      rec = source[i]
    except sources.BadRecordError as e:
      bad += 1
      print(f"skipped bad record {e.record_id}: {e.reason}", file=sys.stderr)
      continue
    file = f"{_file_name(str(rec['record_id']), taken)}.{fmt}"
    fig = printout.render(rec["signal"], float(rec["fs"]), rec["leads"], layout=layout,
                          style=style, dpi=dpi, title=str(rec["record_id"]),
                          lead_mask=rec.get("lead_mask"))
    printout.save(fig, os.path.join(out_dir, file), fmt)
    row = [file, rec["record_id"], rec.get("patient_id", rec["record_id"]), rec.get("fold", 0)]
    if labels is not None and names:
      row += [f"{v:g}" for v in labels[i]]
    rows.append(row)
  with open(os.path.join(out_dir, "labels.csv"), "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["file", "record_id", "patient_id", "fold", *names])
    writer.writerows(rows)
  return {"records": len(source), "rendered": len(rows), "bad": bad}


def stage_sheet(stages: list[tuple[str, np.ndarray]], height: int = 360) -> np.ndarray:
  """Stage pictures side by side at one height, each titled: uint8 (height + 24, W, 3) RGB."""
  import cv2  # pylint: disable=g-import-not-at-top
  tiles = []
  for name, img in stages:
    img = img if img.ndim == 3 else np.repeat(img[..., None], 3, -1)
    w = max(1, round(img.shape[1] * height / img.shape[0]))
    interp = cv2.INTER_AREA if img.shape[0] > height else cv2.INTER_NEAREST
    tile = np.full((height + 24, w + 8, 3), 255, np.uint8)
    tile[24:, 4:w + 4] = cv2.resize(img, (w, height), interpolation=interp)
    cv2.putText(tile, name, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    tiles.append(tile)
  return np.concatenate(tiles, axis=1)


def preprocess_file(path: str, out: str, *, preset: str = "eianet", stages: bool = False,
                    height: int | None = None, width: int | None = None,
                    pdf_dpi: float = 200.0) -> None:
  """Writes what the model sees of the image at `path` (or every stage) to the PNG `out`."""
  import cv2  # pylint: disable=g-import-not-at-top
  from ecgjax.data import images  # pylint: disable=g-import-not-at-top
  from ecgjax.data.formats import image as image_format  # pylint: disable=g-import-not-at-top
  from ecgjax.data.sources import BadRecordError  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise UserError(f"{path}: no such file")
  sizes = {k: v for k, v in (("height", height), ("width", width)) if v}
  try:
    pp = images.preset(preset, **sizes)
  except ValueError as e:
    raise UserError(str(e)) from None
  try:
    if path.lower().endswith(image_format.PDF_EXTENSIONS):
      pixels = image_format.render_pdf_page(path, 0, pdf_dpi)
    else:
      pixels = image_format.decode_image(path)
  except BadRecordError as e:
    raise UserError(f"{path}: {e.reason}") from None
  steps = pp.stages(pixels)
  picture = stage_sheet(steps) if stages else steps[-1][1]
  if picture.ndim == 3:
    picture = picture[..., ::-1]  # OpenCV writes BGR
  if not cv2.imwrite(out, picture):
    raise UserError(f"{out}: cannot write (the name must end in .png or .jpg)")


def main(argv: list[str]) -> None:
  """`render SPEC OUT_DIR` or `preprocess IMAGE OUT.png`."""
  args = argv[1:]
  if len(args) == 3 and args[0] == "preprocess":
    preprocess_file(args[1], args[2], preset=_PRESET.value, stages=_STAGES.value,
                    height=_HEIGHT.value, width=_WIDTH.value, pdf_dpi=_PDF_DPI.value)
    print(f"wrote {args[2]}")
    return
  if len(args) != 3 or args[0] != "render":
    raise UserError(f"usage: {_USAGE.strip()}")
  counts = render_source(args[1], args[2], layout=_LAYOUT.value, dpi=_DPI.value,
                         fmt=_FORMAT.value, style=_STYLE.value, overwrite=_OVERWRITE.value)
  print(f"rendered {counts['rendered']} of {counts['records']} records into {args[2]} "
        f"({counts['bad']} bad, skipped); labels in {os.path.join(args[2], 'labels.csv')}")


if __name__ == "__main__":
  cli.run(main)
