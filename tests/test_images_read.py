"""Reading printouts (image:DIR) and EIANet's preprocessing on printouts drawn many ways."""

import csv
import dataclasses
import os

import cv2
import numpy as np
import pytest
from matplotlib.backends.backend_pdf import PdfPages

from ecgjax import data
from ecgjax.data import images
from ecgjax.data.sources import BadRecordError
from ecgjax.images import printout

LEADS = tuple(data.LEADS_12)


def _record(seed=0):
  return data.open_source(f"synthetic:2?seed={seed}&fs=500&seconds=10")[0]


def _rgb(fig):
  fig.canvas.draw()
  img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
  import matplotlib.pyplot as plt
  plt.close(fig)
  return img


def _write_png(path, rgb):
  assert cv2.imwrite(str(path), rgb[..., ::-1])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """PNG, JPEG, TIFF, a 2-page PDF, an unlabelled image and broken files, with labels.csv."""
  root = tmp_path_factory.mktemp("imgs")
  rec = _record()
  page = _rgb(printout.render(rec["signal"], rec["fs"], rec["leads"], dpi=60))
  _write_png(root / "a.png", page)
  cv2.imwrite(str(root / "b.jpg"), page[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
  os.makedirs(root / "sub")
  cv2.imwrite(str(root / "sub" / "c.tif"), page[..., ::-1])
  with PdfPages(root / "report.pdf") as pdf:
    for _ in range(2):
      pdf.savefig(printout.render(rec["signal"], rec["fs"], rec["leads"], dpi=60))
  _write_png(root / "unlabelled.png", page)
  good = open(root / "a.png", "rb").read()
  open(root / "truncated.png", "wb").write(good[: len(good) // 2])
  open(root / "empty.png", "wb").close()
  open(root / "garbage.png", "wb").write(b"not an image at all" * 10 + b"IEND")
  _write_png(root / "blank.png", np.full((80, 120, 3), 255, np.uint8))
  rows = [["file", "record_id", "patient_id", "fold", "MI", "STTC"],
          ["a.png", "rec-a", "p1", "1", "1", "0"], ["b.jpg", "rec-b", "p1", "2", "0", "1"],
          ["sub/c.tif", "rec-c", "p2", "3", "1", "1"], ["report.pdf", "rep", "p3", "4", "0", "0"],
          ["truncated.png", "t", "p4", "1", "0", "0"], ["missing.png", "m", "p5", "1", "1", "0"]]
  with open(root / "labels.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows)
  return root


def test_image_folder_is_a_source_with_labels_from_the_csv(folder):
  src = data.open_source(f"image:{folder}?dpi=50")
  meta = src.metadata()
  ids = list(meta["record_id"])
  assert src.label_names == ("MI", "STTC")
  for rid in ("rec-a", "rec-b", "rec-c", "rep#p1", "rep#p2", "unlabelled", "m"):
    assert rid in ids
  i = ids.index("rec-c")
  assert meta["patient_id"][i] == "p2" and meta["fold"][i] == 3
  np.testing.assert_array_equal(meta["labels"][i], [1, 1])
  assert np.isnan(meta["labels"][ids.index("unlabelled")]).all()  # no row: unlabelled
  for rid in ("rec-a", "rec-b", "rec-c", "rep#p2"):
    rec = src[ids.index(rid)]
    px = rec["pixels"]
    assert px.dtype == np.uint8 and px.ndim == 3 and px.shape[2] == 3 and px.shape[0] > 100
  # The PNG decodes to what was drawn (RGB, not OpenCV's BGR); the JPEG close to it.
  a, b = src[ids.index("rec-a")]["pixels"], src[ids.index("rec-b")]["pixels"]
  np.testing.assert_array_equal(a, cv2.imread(str(folder / "a.png"))[..., ::-1])
  assert tuple(a[0, 0]) == (229, 115, 115)  # the red major grid line at the corner
  assert np.abs(a.astype(int) - b.astype(int)).mean() < 12
  # Folds select through the common option, as for signals.
  assert set(data.open_source(f"image:{folder}?folds=3").metadata()["record_id"]) == {"rec-c"}


@pytest.mark.parametrize("rid, why", [("t", "truncated PNG"), ("m", "does not exist"),
                                      ("empty", "empty file"), ("garbage", "cannot decode"),
                                      ("blank", "blank image")])
def test_bad_images_are_bad_records_naming_the_file(folder, rid, why):
  src = data.open_source(f"image:{folder}")
  ids = list(src.metadata()["record_id"])
  with pytest.raises(BadRecordError, match=why) as e:
    src[ids.index(rid)]
  assert e.value.record_id == rid and str(folder) in e.value.reason


def _trace_reference(rec, pg, pp, height, width):
  """The record's trace and pulses rasterised straight from the page geometry, in the fitted
  (height, width) picture: where preprocessing must keep ink."""
  scale = min(height / pg.height_mm, width / pg.width_mm)
  top = (height - round(pg.height_mm * scale)) / 2
  left = (width - round(pg.width_mm * scale)) / 2
  to_px = lambda x, y: np.stack([left + x * scale, top + (pg.height_mm - y) * scale], -1)  # noqa
  canvas = np.zeros((height, width), np.uint8)
  fs, sig = rec["fs"], rec["signal"]
  idx = {n: i for i, n in enumerate(rec["leads"])}
  for p in pg.panels:
    lo, hi = int(p.t0 * fs), min(int(p.t1 * fs) + 1, sig.shape[1])
    t = np.arange(lo, hi) / fs
    pts = to_px(p.x_mm + (t - p.t0) * 25.0, p.baseline_mm + sig[idx[p.lead], lo:hi] * 10.0)
    cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 255, 1)
  for x, y in pg.pulses:
    pts = to_px(np.array([x - 1, x, x, x + 5, x + 5, pg.trace_x0_mm]),
                np.array([y, y, y + 10, y + 10, y, y]))
    cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 255, 1)
  return canvas > 0


def _scan(img, rng):
  """A scan / photo of paper: a small rotation, sensor noise and JPEG compression."""
  h, w = img.shape[:2]
  m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.6, 1.0)
  img = cv2.warpAffine(img, m, (w, h), borderValue=(255, 255, 255))
  img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
  ok, enc = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 75])
  return cv2.imdecode(enc, cv2.IMREAD_COLOR)[..., ::-1]


CASES = [(style, dpi, "") for style in ("red", "pink", "green", "grey") for dpi in (100, 300)]
CASES += [("red", 150, "scan"), ("green", 200, "margins"), ("red", 120, "6x2")]


@pytest.mark.parametrize("style, dpi, variant", CASES)
def test_eianet_preprocessing_removes_grid_and_labels_and_keeps_the_trace(style, dpi, variant):
  rec = _record(seed=3)
  look = printout.STYLES[style]
  layout = "6x2" if variant == "6x2" else "3x4+II"
  if variant == "margins":  # another printer: wider margins, a bigger font
    look = dataclasses.replace(look, margin_mm=18.0, font_size=9.0, header_mm=20.0)
  pg = printout.page(layout, look)
  img = _rgb(printout.render(rec["signal"], rec["fs"], rec["leads"], layout=layout,
                             style=look, dpi=dpi, title="PATIENT 0042  12-lead"))
  if variant == "scan":
    img = _scan(img, np.random.default_rng(0))
  pp = images.preset("eianet")
  out = pp.prepare(img)
  assert out.shape == (pp.height, pp.width, 1) and out.dtype == np.float32
  assert set(np.unique(out)) <= {0.0, 1.0}  # binary, as the paper's last step
  ink = out[..., 0] < 0.5
  ref = _trace_reference(rec, pg, pp, pp.height, pp.width)
  near = lambda m, r: cv2.dilate(m.astype(np.uint8), np.ones((2 * r + 1,) * 2)) > 0  # noqa
  recall = near(ink, 2)[ref].mean()  # the trace is kept
  precision = near(ref, 3)[ink].mean()  # and little else: grid, labels and header are gone
  assert recall > 0.9 and precision > 0.93, (recall, precision)


def test_components_stage_removes_lead_names_but_not_the_flat_trace():
  rec = _record()
  flat = np.zeros_like(rec["signal"])
  dpi = 200.0
  pg = printout.page("3x4+II")
  img = _rgb(printout.render(flat, rec["fs"], rec["leads"], dpi=dpi, style="red"))
  stages = dict(images.preset("eianet").stages(img))
  px = lambda mm: int(round(printout.mm_to_px(mm, dpi)))  # noqa: E731
  h = img.shape[0]
  for p in pg.panels:  # each name sits 11-14 mm above its baseline, from x + 1 mm
    box = (slice(h - px(p.baseline_mm + 14.5), h - px(p.baseline_mm + 10.5)),
           slice(px(p.x_mm + 0.5), px(p.x_mm + 6.5)))
    assert (stages["threshold"][box] < 128).any(), p.lead  # the name is ink after step 1
    assert not (stages["components"][box] < 128).any(), p.lead  # and gone after step 2
    row = h - px(p.baseline_mm)
    cols = slice(px(p.x_mm + 5), px(p.x_mm + 30))
    assert (stages["components"][row - 2:row + 3, cols] < 128).any(axis=0).all(), p.lead


def test_raw_arm_keeps_the_picture_and_sizes_are_config():
  rec = _record()
  img = _rgb(printout.render(rec["signal"], rec["fs"], rec["leads"], dpi=80))
  raw = images.preset("raw", height=256, width=256)
  out = raw.prepare(img)
  assert out.shape == (256, 256, 3)
  # Aspect kept: the landscape page fills the width, white bands pad above and below.
  assert (out[:20] == 1.0).all() and (out[-20:] == 1.0).all() and out[128].min() < 0.5
  stretched = images.preset("raw", height=256, width=256, aspect="stretch").prepare(img)
  assert stretched[:20].min() < 1.0
  with pytest.raises(ValueError, match="channels=3 keeps the RGB picture"):
    images.ImagePreprocessing(channels=3)
  with pytest.raises(ValueError, match="unknown ImagePreprocessing keys"):
    images.ImagePreprocessing.from_dict({"hieght": 3})


def test_preprocess_command_writes_the_stage_sheet(folder, tmp_path):
  import subprocess, sys
  out = tmp_path / "stages.png"
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "ecgjax.images", "preprocess",
                         str(folder / "a.png"), str(out), "--stages"], cwd=repo,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  sheet = cv2.imread(str(out))
  assert sheet.shape[0] == 384 and sheet.shape[1] > 8 * 300  # input + 7 stages + fitted
  bad = subprocess.run([sys.executable, "-m", "ecgjax.images", "preprocess",
                        str(folder / "truncated.png"), str(out)], cwd=repo,
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 2 and "truncated PNG" in bad.stderr and "Traceback" not in bad.stderr


def test_inspect_lists_image_sizes_unlabelled_images_and_bad_files(folder):
  import json, subprocess, sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  proc = subprocess.run([sys.executable, "-m", "ecgjax.data", "inspect", f"image:{folder}?dpi=50",
                         "--json", "--workers", "0"], cwd=repo, capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  s = json.loads(proc.stdout.strip().splitlines()[-1])
  assert s["source_records"] == 11 and s["bad_count"] == 5 and s["records"] == 6
  assert s["unlabelled"] == 1 and s["labels"] == {"MI": 2, "STTC": 2}
  assert sum(s["image_sizes"].values()) == 6
  assert {b["path"] for b in s["bad"]} == {"t", "m", "empty", "garbage", "blank"}
