"""12-lead printouts in the paper convention (SPEC.md section 12), drawn in millimetres.

The page is one matplotlib axes whose data units are millimetres of paper, so the geometry is
exact at any DPI: 25 mm/s, 10 mm/mV, a 1 mm / 5 mm grid, a 1 mV x 200 ms calibration pulse at
the start of every row and each lead's name above its trace. `draw` puts a record on any page
(the renderer, and every figure of a record elsewhere in ecgjax, use it); `figure` makes the
page; `save` writes PNG or a one-page PDF, byte-for-byte the same on every run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
from matplotlib import collections as mcollections  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

MM_PER_S = 25.0  # paper speed
MM_PER_MV = 10.0  # gain
CAL_MV, CAL_S = 1.0, 0.2  # the calibration pulse: 1 mV for 200 ms
MM_PER_INCH = 25.4

# Layouts: rows of (lead, first second shown) panels; every panel of a row spans the same time,
# so a column is a time window (3x4: column c shows seconds 2.5c .. 2.5(c + 1) of its leads).
_3X4 = (("I", "aVR", "V1", "V4"), ("II", "aVL", "V2", "V5"), ("III", "aVF", "V3", "V6"))
LAYOUTS: dict[str, dict] = {
    "3x4+II": dict(rows=_3X4, seconds=2.5, rhythm="II", row_mm=40.0),
    "3x4": dict(rows=_3X4, seconds=2.5, rhythm=None, row_mm=45.0),
    "6x2": dict(rows=(("I", "V1"), ("II", "V2"), ("III", "V3"), ("aVR", "V4"), ("aVL", "V5"),
                      ("aVF", "V6")), seconds=5.0, rhythm=None, row_mm=30.0),
    "12x1": dict(rows=tuple((lead,) for lead in ("I", "II", "III", "aVR", "aVL", "aVF", "V1",
                                                 "V2", "V3", "V4", "V5", "V6")),
                 seconds=10.0, rhythm=None, row_mm=20.0),
}


@dataclasses.dataclass(frozen=True)
class Style:
  """How the paper looks: grid colours and line widths (points), trace, fonts, margins (mm)."""
  minor: str = "#f6c2c2"  # 1 mm lines
  major: str = "#e57373"  # 5 mm lines
  background: str = "#ffffff"
  trace: str = "#000000"
  minor_lw: float = 0.25
  major_lw: float = 0.6
  trace_lw: float = 0.7
  font: str = "DejaVu Sans"
  font_size: float = 7.0
  margin_mm: float = 10.0
  header_mm: float = 15.0  # room above the first row for the record's name


# Grid colours seen on real printouts (red / pink thermal paper, green, grey photocopies).
STYLES: dict[str, Style] = {
    "red": Style(),
    "pink": Style(minor="#fbe3ea", major="#f19cb7"),
    "green": Style(minor="#cdebd2", major="#6fbf7e"),
    "grey": Style(minor="#e2e2e2", major="#b3b3b3"),  # photocopy grey
    "none": Style(minor="#ffffff", major="#ffffff"),
}


@dataclasses.dataclass(frozen=True)
class Panel:
  """One trace on the page: `lead` from second t0 to t1, drawn from x_mm with its 0 mV line
  at baseline_mm (millimetres from the page's bottom edge)."""
  lead: str
  t0: float
  t1: float
  x_mm: float
  baseline_mm: float


@dataclasses.dataclass(frozen=True)
class Page:
  """The page of a layout: its size (mm), its panels and each row's calibration pulse."""
  width_mm: float
  height_mm: float
  panels: tuple[Panel, ...]
  pulses: tuple[tuple[float, float], ...]  # (x_mm, baseline_mm) where each pulse starts
  trace_x0_mm: float  # where time 0 of every row is drawn


def page(layout: str = "3x4+II", style: Style = Style(), seconds: float = 10.0) -> Page:
  """The geometry of `layout` (3x4+II, 3x4, 6x2, 12x1) for a record of `seconds`."""
  if layout not in LAYOUTS:
    raise ValueError(f"unknown layout {layout!r}; known: {', '.join(LAYOUTS)}")
  spec = LAYOUTS[layout]
  rows = [list(r) for r in spec["rows"]]
  row_seconds = spec["seconds"] * len(rows[0])
  rows_t = [[(lead, c * spec["seconds"], (c + 1) * spec["seconds"]) for c, lead in enumerate(r)]
            for r in rows]
  if spec["rhythm"]:
    rows_t.append([(spec["rhythm"], 0.0, row_seconds)])
  m, pulse_w = style.margin_mm, CAL_S * MM_PER_S
  x0 = m + pulse_w + 2.0  # the pulse, then 2 mm of baseline before the trace
  width = x0 + row_seconds * MM_PER_S + m
  row_mm = spec["row_mm"]
  height = 2 * m + style.header_mm + row_mm * len(rows_t)
  panels, pulses = [], []
  for i, row in enumerate(rows_t):
    # The baseline sits 40% up its row: QRS complexes are mostly upward.
    base = height - m - style.header_mm - row_mm * (i + 1) + 0.4 * row_mm
    pulses.append((m, base))
    for lead, t0, t1 in row:
      panels.append(Panel(lead, t0, min(t1, max(seconds, t0)), x0 + t0 * MM_PER_S, base))
  return Page(width, height, tuple(panels), tuple(pulses), x0)


def figure(pg: Page, style: Style = Style(), dpi: float = 200.0):
  """A blank page: one axes filling the figure, data units = millimetres of paper."""
  fig = plt.figure(figsize=(pg.width_mm / MM_PER_INCH, pg.height_mm / MM_PER_INCH), dpi=dpi,
                   facecolor=style.background)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.set_xlim(0, pg.width_mm)
  ax.set_ylim(0, pg.height_mm)
  ax.set_axis_off()
  ax.set_facecolor(style.background)
  _grid(ax, pg, style)
  return fig, ax


def _grid(ax, pg: Page, style: Style) -> None:
  for step, color, lw in ((1.0, style.minor, style.minor_lw), (5.0, style.major, style.major_lw)):
    if color == style.background:
      continue
    xs = np.arange(0.0, pg.width_mm + 1e-9, step)
    ys = np.arange(0.0, pg.height_mm + 1e-9, step)
    if step == 1.0:  # minor lines that coincide with major ones are drawn once, by the major
      xs, ys = xs[np.round(xs) % 5 != 0], ys[np.round(ys) % 5 != 0]
    segs = [((x, 0.0), (x, pg.height_mm)) for x in xs]
    segs += [((0.0, y), (pg.width_mm, y)) for y in ys]
    ax.add_collection(mcollections.LineCollection(segs, colors=color, linewidths=lw,
                                                  antialiased=False, zorder=0))


def draw(ax, pg: Page, signal: np.ndarray, fs: float, leads: Sequence[str],
         style: Style = Style(), title: str = "", lead_mask: np.ndarray | None = None) -> None:
  """Draws `signal` (leads, samples) in mV at `fs` onto the page `pg`: every panel's lead over
  its seconds, the calibration pulses, the lead names; an absent lead (not in `leads`, or 0 in
  `lead_mask`) keeps its name and no trace."""
  signal = np.asarray(signal, np.float64)
  index = {name: i for i, name in enumerate(leads)}
  segs = []
  for p in pg.panels:
    i = index.get(p.lead)
    present = i is not None and (lead_mask is None or lead_mask[i] > 0)
    ax.text(p.x_mm + 1.0, p.baseline_mm + 11.0, p.lead, fontsize=style.font_size,
            family=style.font, color=style.trace, va="bottom", ha="left")
    if not present:
      continue
    lo, hi = int(round(p.t0 * fs)), min(int(round(p.t1 * fs)) + 1, signal.shape[-1])
    if hi - lo < 2:
      continue
    t = np.arange(lo, hi) / fs
    x = p.x_mm + (t - p.t0) * MM_PER_S
    y = p.baseline_mm + np.nan_to_num(signal[i, lo:hi]) * MM_PER_MV
    segs.append(np.stack([x, y], -1))
  pulse_w, pulse_h = CAL_S * MM_PER_S, CAL_MV * MM_PER_MV
  for x, y in pg.pulses:
    segs.append(np.array([(x - 1.0, y), (x, y), (x, y + pulse_h), (x + pulse_w, y + pulse_h),
                          (x + pulse_w, y), (pg.trace_x0_mm, y)]))
  ax.add_collection(mcollections.LineCollection(segs, colors=style.trace,
                                                linewidths=style.trace_lw, zorder=2,
                                                capstyle="butt", joinstyle="round"))
  ax.text(style.margin_mm, pg.height_mm - style.margin_mm, title,
          fontsize=style.font_size + 1, family=style.font, color=style.trace, va="top")
  ax.text(pg.width_mm - style.margin_mm, pg.height_mm - style.margin_mm,
          f"{MM_PER_S:g} mm/s  {MM_PER_MV:g} mm/mV", fontsize=style.font_size,
          family=style.font, color=style.trace, va="top", ha="right")


def shade(ax, pg: Page, values: np.ndarray, fs: float, leads: Sequence[str], *,
          alpha: float = 0.75, vmax: float | None = None) -> None:
  """Draws per-sample `values` (leads, samples) at `fs` behind each panel's trace as a colour
  band (an attribution under the ECG): red where positive, blue where negative, opacity
  growing with |value| / `vmax` (default: the largest |value|), so the grid shows through
  where the value is near 0."""
  values = np.nan_to_num(np.asarray(values, np.float64))
  vmax = float(vmax if vmax is not None else np.abs(values).max()) or 1.0
  index = {name: i for i, name in enumerate(leads)}
  red, blue = np.array([0.84, 0.15, 0.16]), np.array([0.13, 0.40, 0.67])
  for p in pg.panels:
    i = index.get(p.lead)
    if i is None:
      continue
    lo, hi = int(round(p.t0 * fs)), min(int(round(p.t1 * fs)), values.shape[-1])
    if hi - lo < 1:
      continue
    v = np.clip(values[i, lo:hi] / vmax, -1.0, 1.0)
    rgba = np.zeros((1, hi - lo, 4))
    rgba[0, :, :3] = np.where(v[:, None] >= 0, red, blue)
    rgba[0, :, 3] = alpha * np.abs(v)
    ax.imshow(rgba, aspect="auto", interpolation="nearest", zorder=1,
              extent=(p.x_mm, p.x_mm + (hi - lo) / fs * MM_PER_S, p.baseline_mm - 12.0,
                      p.baseline_mm + 18.0))
  ax.set_xlim(0, pg.width_mm)  # imshow resets the limits to its extent
  ax.set_ylim(0, pg.height_mm)


def render(signal: np.ndarray, fs: float, leads: Sequence[str], *, layout: str = "3x4+II",
           style: Style | str = "red", dpi: float = 200.0, title: str = "",
           lead_mask: np.ndarray | None = None):
  """The printout of one record as a matplotlib figure (close it, or `save` it)."""
  style = STYLES[style] if isinstance(style, str) else style
  pg = page(layout, style, seconds=np.shape(signal)[-1] / fs)
  fig, ax = figure(pg, style, dpi)
  draw(ax, pg, signal, fs, leads, style, title, lead_mask)
  return fig


def save(fig, path: str, fmt: str = "png") -> None:
  """Writes the figure (PNG, or a one-page PDF) without timestamps, so reruns are identical."""
  if fmt not in ("png", "pdf"):
    raise ValueError(f"format must be png or pdf, got {fmt!r}")
  metadata = {"Software": None} if fmt == "png" else {"CreationDate": None, "Producer": None,
                                                       "Creator": None}
  fig.savefig(path, format=fmt, dpi=fig.dpi, metadata=metadata, facecolor=fig.get_facecolor())
  plt.close(fig)


def mm_to_px(mm: float, dpi: float) -> float:
  """Millimetres of paper -> pixels at `dpi`."""
  return mm * dpi / MM_PER_INCH
