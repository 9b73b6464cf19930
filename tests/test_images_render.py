"""12-lead printouts: paper geometry measured on the rendered pixels, layouts, determinism, CLI."""

import csv
import io
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ecgjax.images import printout

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEADS = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")


def _pixels(signal, fs=500.0, dpi=300.0, layout="3x4+II", style="none"):
  """The rendered page as a (H, W) bool array of trace (dark) pixels, row 0 at the top."""
  buf = io.BytesIO()
  fig = printout.render(signal, fs, LEADS, layout=layout, style=style, dpi=dpi)
  fig.savefig(buf, format="png", dpi=dpi)
  img = np.asarray(Image.open(buf).convert("L"))
  return img < 128


def _row_px(baseline_mm, height_mm, dpi):
  return int(round(printout.mm_to_px(height_mm - baseline_mm, dpi)))


@pytest.mark.parametrize("dpi", [100.0, 300.0])
def test_calibration_pulse_is_10_mm_tall_and_10_s_span_250_mm(dpi):
  pg = printout.page("3x4+II")
  dark = _pixels(np.zeros((12, 5000), np.float32), dpi=dpi)
  # The page is its size in mm at the DPI (matplotlib truncates to whole pixels).
  assert abs(dark.shape[0] - printout.mm_to_px(pg.height_mm, dpi)) < 1
  assert abs(dark.shape[1] - printout.mm_to_px(pg.width_mm, dpi)) < 1
  px = lambda mm: printout.mm_to_px(mm, dpi)  # noqa: E731
  tol = 2.0  # pixels: line width and rounding
  for x_mm, base_mm in pg.pulses:
    cols = slice(int(px(x_mm - 0.5)), int(px(x_mm + 5.5)))  # the pulse and its two edges
    rows = np.flatnonzero(dark[:, cols].any(1))
    rows = rows[np.abs(rows - _row_px(base_mm, pg.height_mm, dpi)) < px(15)]
    assert abs((rows.max() - rows.min()) - px(10.0)) <= tol + px(0.3)  # + the line width
  # The rhythm strip (the last row) is 10 s of lead II: 250 mm of trace from trace_x0_mm.
  base = _row_px(pg.pulses[-1][1], pg.height_mm, dpi)
  band = dark[base - 2:base + 3]
  cols = np.flatnonzero(band.any(0))
  cols = cols[cols >= px(pg.trace_x0_mm) - 1]
  assert abs((cols.max() - cols.min()) - px(250.0)) <= tol + px(0.3)


def test_one_millivolt_is_drawn_10_mm_above_the_baseline():
  dpi = 200.0
  pg = printout.page("12x1")
  x = np.zeros((12, 5000), np.float32)
  x[0] = 1.0  # lead I at +1 mV for the whole record
  dark = _pixels(x, dpi=dpi, layout="12x1")
  lead_i = pg.panels[0]
  assert lead_i.lead == "I"
  col = int(printout.mm_to_px(lead_i.x_mm + 100.0, dpi))  # 4 s in, away from labels
  rows = np.flatnonzero(dark[:, col])
  want = _row_px(lead_i.baseline_mm + 10.0, pg.height_mm, dpi)
  assert np.min(np.abs(rows - want)) <= 2


@pytest.mark.parametrize("layout", sorted(printout.LAYOUTS))
def test_every_layout_places_each_of_the_12_leads(layout):
  pg = printout.page(layout)
  leads = [p.lead for p in pg.panels]
  assert set(leads) == set(LEADS)
  assert len(leads) == 12 + (layout == "3x4+II")
  # Every panel starts inside the page and its seconds fit in the row's 250 mm.
  for p in pg.panels:
    assert pg.trace_x0_mm <= p.x_mm and p.x_mm + (p.t1 - p.t0) * 25.0 <= pg.width_mm
  if layout.startswith("3x4"):
    starts = {p.lead: p.t0 for p in pg.panels[:12]}
    assert starts["I"] == starts["II"] == 0.0 and starts["V4"] == starts["V6"] == 7.5


def test_absent_leads_keep_their_label_and_draw_no_trace():
  x = np.full((12, 5000), 1.0, np.float32)
  mask = np.ones(12, np.float32)
  mask[LEADS.index("V1")] = 0.0
  dpi = 150.0
  pg = printout.page("3x4")
  buf = io.BytesIO()
  fig = printout.render(x, 500.0, LEADS, layout="3x4", style="none", dpi=dpi, lead_mask=mask)
  fig.savefig(buf, format="png", dpi=dpi)
  dark = np.asarray(Image.open(buf).convert("L")) < 128
  v1 = next(p for p in pg.panels if p.lead == "V1")
  v2 = next(p for p in pg.panels if p.lead == "V2")
  col = lambda p: int(printout.mm_to_px(p.x_mm + 30.0, dpi))  # noqa: E731
  row = lambda p: _row_px(p.baseline_mm + 10.0, pg.height_mm, dpi)  # noqa: E731
  assert dark[row(v2) - 2:row(v2) + 3, col(v2)].any()
  assert not dark[row(v1) - 2:row(v1) + 3, col(v1)].any()


@pytest.mark.parametrize("fmt", ["png", "pdf"])
def test_rendering_is_byte_for_byte_deterministic(tmp_path, fmt):
  x = np.random.default_rng(0).normal(scale=0.3, size=(12, 2500)).astype(np.float32)
  paths = []
  for k in range(2):
    path = str(tmp_path / f"{k}.{fmt}")
    printout.save(printout.render(x, 250.0, LEADS, dpi=72.0), path, fmt)
    paths.append(path)
  assert open(paths[0], "rb").read() == open(paths[1], "rb").read()


def test_render_command_writes_images_and_labels_csv(tmp_path):
  out = tmp_path / "imgs"
  proc = subprocess.run(
      [sys.executable, "-m", "ecgjax.images", "render", "synthetic:3?seed=4&fs=500", str(out),
       "--dpi", "40", "--layout", "6x2", "--style", "green"],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  rows = list(csv.reader(open(out / "labels.csv")))
  assert rows[0][:4] == ["file", "record_id", "patient_id", "fold"] and len(rows) == 4
  from ecgjax import data
  src = data.open_source("synthetic:3?seed=4&fs=500")
  assert rows[0][4:] == list(src.label_names)
  for row, i in zip(rows[1:], range(3)):
    assert row[1] == src[i]["record_id"] and (out / row[0]).is_file()
    assert [float(v) for v in row[4:]] == list(src.metadata()["labels"][i])
  # A second run refuses to write into the filled directory: one line, exit 2.
  again = subprocess.run([sys.executable, "-m", "ecgjax.images", "render", "synthetic:3", str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
  assert again.returncode == 2 and "--overwrite" in again.stderr
  assert "Traceback" not in again.stderr
