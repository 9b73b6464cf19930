"""`image:DIR`: ECG printouts as images (PNG, JPEG, TIFF, BMP) and PDF report pages.

Every image file under DIR (recursively, sorted) is a record; a PDF gives one record per page,
rendered at `dpi` by PDFium. Labels come from DIR/labels.csv (or `labels=FILE`) with the columns
`file` (the image's path relative to DIR), `record_id`, `patient_id`, `fold`, then one column
per label: what `python -m ecgjax.images render` writes and any image software can. An image
with no row is an unlabelled record (labels NaN); a row whose file is missing, and an image that
is empty, truncated or cannot be decoded, is a bad record named by its path.

A record carries `pixels` uint8 (height, width, 3) RGB as decoded, not a signal; the image
contract (`ecgjax.data.images`) brings it to the model's input size.
"""

from __future__ import annotations

import csv
import os
from typing import Any

import numpy as np

from ecgjax.data import specs
from ecgjax.data.sources import BadRecordError, Record, Source, id_text

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
PDF_EXTENSIONS = (".pdf",)
LABELS_CSV = "labels.csv"
ID_COLUMNS = ("file", "record_id", "patient_id", "fold")


def _complete(path: str, data: bytes) -> str | None:
  """Why an encoded file is cut short (None: its end marker is there). PNG and JPEG decoders
  return a partial picture for a truncated file; the end markers tell."""
  ext = os.path.splitext(path)[1].lower()
  if ext == ".png" and b"IEND" not in data[-64:]:
    return "truncated PNG (no IEND chunk at the end)"
  if ext in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-64:]:
    return "truncated JPEG (no end-of-image marker)"
  return None


def decode_image(path: str) -> np.ndarray:
  """An image file -> uint8 (H, W, 3) RGB; BadRecordError naming the file when it cannot be."""
  import cv2  # pylint: disable=g-import-not-at-top
  try:
    with open(path, "rb") as f:
      data = f.read()
  except OSError as e:
    raise BadRecordError(path, f"cannot read: {e.strerror or e}") from None
  if not data:
    raise BadRecordError(path, "empty file (0 bytes)")
  why = _complete(path, data)
  if why:
    raise BadRecordError(path, why)
  img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
  if img is None or img.size == 0:
    raise BadRecordError(path, "cannot decode as an image (corrupt, or not PNG/JPEG/TIFF/BMP)")
  return np.ascontiguousarray(img[..., ::-1])  # OpenCV decodes BGR


def pdf_pages(path: str) -> int:
  """Number of pages of a PDF (0 when it cannot be opened)."""
  import pypdfium2 as pdfium  # pylint: disable=g-import-not-at-top
  try:
    doc = pdfium.PdfDocument(path)
  except (pdfium.PdfiumError, OSError):
    return 0
  try:
    return len(doc)
  finally:
    doc.close()


def render_pdf_page(path: str, page: int, dpi: float) -> np.ndarray:
  """Page `page` of a PDF rendered at `dpi` -> uint8 (H, W, 3) RGB."""
  import pypdfium2 as pdfium  # pylint: disable=g-import-not-at-top
  try:
    doc = pdfium.PdfDocument(path)
  except (pdfium.PdfiumError, OSError) as e:
    raise BadRecordError(path, f"cannot open as a PDF: {e}") from None
  try:
    if not 0 <= page < len(doc):
      raise BadRecordError(path, f"has {len(doc)} pages, no page {page + 1}")
    bitmap = doc[page].render(scale=dpi / 72.0, fill_color=(255, 255, 255, 255))
    img = bitmap.to_numpy()
    mode = getattr(bitmap, "mode", "BGR")
  finally:
    doc.close()
  if img.ndim == 2:
    img = np.repeat(img[..., None], 3, -1)
  if mode in ("BGR", "BGRA", "BGRX"):
    img = img[..., 2::-1]
  return np.ascontiguousarray(img[..., :3])


def check_not_blank(record_id: str, img: np.ndarray) -> np.ndarray:
  """A picture with no contrast at all (a blank page) has no trace to learn from: bad."""
  if img.shape[0] < 8 or img.shape[1] < 8:
    raise BadRecordError(record_id, f"image of {img.shape[1]}x{img.shape[0]} pixels is empty")
  if int(img.max()) - int(img.min()) < 16:
    raise BadRecordError(record_id, "blank image (no trace: every pixel the same shade)")
  return img


def _read_labels(path: str) -> tuple[tuple[str, ...], dict[str, dict[str, Any]]]:
  """labels.csv -> (label names, {file: {record_id, patient_id, fold, labels}})."""
  with open(path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    raise ValueError(f"{path} is empty; expected a header {','.join(ID_COLUMNS)},<labels...>")
  header = [h.strip() for h in rows[0]]
  if not header or header[0] != "file":
    raise ValueError(f"{path}: the first column must be 'file' (the image's path relative to "
                     f"the image folder), got {header[:1]}")
  cols = {h: j for j, h in enumerate(header)}
  names = tuple(h for h in header if h not in ID_COLUMNS)
  table = {}
  for line, row in enumerate(rows[1:], start=2):
    if not any(c.strip() for c in row):
      continue
    if len(row) != len(header):
      raise ValueError(f"{path} line {line}: {len(row)} fields, the header has {len(header)}")
    file = os.path.normpath(row[0].strip())
    try:
      fold = int(float(row[cols["fold"]])) if "fold" in cols and row[cols["fold"]].strip() else 0
      labels = np.array([float(row[cols[n]]) for n in names], np.float32)
    except ValueError as e:
      raise ValueError(f"{path} line {line}: {e}") from None
    rid = id_text(row[cols["record_id"]]) if "record_id" in cols else ""
    pid = id_text(row[cols["patient_id"]]) if "patient_id" in cols else ""
    table[file] = {"record_id": rid, "patient_id": pid, "fold": fold, "labels": labels}
  return names, table


class ImageSource(Source):
  """Images and PDF pages under a folder, with labels from a CSV (see the module docstring)."""

  leads: tuple[str, ...] = ()  # an image has no signal rows; its leads are drawn on it
  fs = None
  modality = "image"

  def __init__(self, root: str, labels: str | None = None, dpi: float = 200.0,
               spec: specs.DataSpec | None = None):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise ValueError(f"image:{self.root} is not a folder of images")
    self.dpi = float(dpi)
    self.spec = spec or specs.DataSpec("image", self.root, {})
    csv_path = labels or os.path.join(self.root, LABELS_CSV)
    names, table = (_read_labels(csv_path) if os.path.isfile(csv_path) else ((), {}))
    if labels and not os.path.isfile(labels):
      raise ValueError(f"labels={labels}: no such file")
    self.label_names = names
    files = []
    for dirpath, dirnames, filenames in os.walk(self.root):
      dirnames.sort()
      for name in sorted(filenames):
        if name.lower().endswith(IMAGE_EXTENSIONS + PDF_EXTENSIONS):
          files.append(os.path.relpath(os.path.join(dirpath, name), self.root))
    # (relative file, PDF page or -1); a listed file that is missing stays a (bad) record.
    entries: list[tuple[str, int]] = []
    for file in files:
      if file.lower().endswith(PDF_EXTENSIONS):
        pages = pdf_pages(os.path.join(self.root, file))
        entries += [(file, p) for p in range(max(pages, 1))]
      else:
        entries.append((file, -1))
    listed = {os.path.normpath(f) for f, _ in entries}
    entries += [(f, -1) for f in sorted(table) if f not in listed]
    self._entries = entries
    n, k = len(entries), len(names)
    self._record_id = np.empty(n, dtype=object)
    self._patient_id = np.empty(n, dtype=object)
    self._fold = np.zeros(n, np.int64)
    self._labels = np.full((n, k), np.nan, np.float32)
    multi_page = {f for f, p in entries if p > 0}  # files with a second page
    for i, (file, page) in enumerate(entries):
      row = table.get(os.path.normpath(file))
      stem = os.path.splitext(file)[0]
      rid = (row or {}).get("record_id") or stem
      if file in multi_page:  # one record per page: the file's id and the page number
        rid = f"{rid}#p{page + 1}"
      self._record_id[i] = rid
      self._patient_id[i] = (row or {}).get("patient_id") or rid
      if row:
        self._fold[i] = row["fold"]
        self._labels[i] = row["labels"]
    self._record_id = self._record_id.astype(str)
    self._patient_id = self._patient_id.astype(str)

  def __len__(self) -> int:
    return len(self._entries)

  def path(self, index: int) -> str:
    """The file behind record `index`."""
    return os.path.join(self.root, self._entries[self._check_index(index)][0])

  def __getitem__(self, index: int) -> Record:
    index = self._check_index(index)
    file, page = self._entries[index]
    path = os.path.join(self.root, file)
    rid = str(self._record_id[index])
    if not os.path.exists(path):
      raise BadRecordError(rid, f"{path} is listed in the labels but does not exist")
    try:
      img = (render_pdf_page(path, max(page, 0), self.dpi)
             if file.lower().endswith(PDF_EXTENSIONS) else decode_image(path))
      img = check_not_blank(path, img)
    except BadRecordError as e:
      raise BadRecordError(rid, f"{path}: {e.reason}") from None
    return {"pixels": img, "record_id": rid,
            "patient_id": str(self._patient_id[index]), "fold": int(self._fold[index]),
            "labels": self._labels[index].copy(), "source_file": path}

  def metadata(self) -> dict[str, np.ndarray]:
    return {"record_id": self._record_id.copy(), "patient_id": self._patient_id.copy(),
            "fold": self._fold.copy(), "labels": self._labels.copy()}


@specs.register_format(
    "image",
    options={
        "labels": specs.Option(str, None, "CSV of labels (default: DIR/labels.csv; columns "
                               "file, record_id, patient_id, fold, then one per label)"),
        "dpi": specs.Option(specs.positive_float, 200.0, "resolution PDF pages are rendered at"),
    },
    help="folder of ECG printout images (PNG, JPEG, TIFF, BMP) and PDF report pages",
    detect=lambda path: os.path.isfile(os.path.join(path, LABELS_CSV)))
def _open_image(spec: specs.DataSpec, *, labels: str | None, dpi: float) -> Source:
  return ImageSource(spec.path, labels, dpi, spec)
