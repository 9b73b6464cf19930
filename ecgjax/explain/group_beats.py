"""The AnyECG-CCTA figure: R-aligned median beats per lead, averaged over the records of each
group (a predicted risk stratum, or a label's positives and negatives), with a 95% band.

For every record: the 0.5-40 Hz signal (wander and mains removed, so medians are comparable
across records), its R peaks (`detect_r_peaks`, all leads combined), the median beat of each
lead over `window` seconds around R (`aligned_beats`), put on a common time grid of
`fs` Hz (linear interpolation) in the standard 12-lead order (a lead the record lacks is NaN and
left out of that lead's average). Per group and lead: the mean of the records' median beats and
mean +- 1.96 standard errors (the band narrows with more records; with one record it is the
line). Records that cannot give a beat (unreadable, too short for one window, no beat found)
are skipped and counted by reason; nothing stops a long run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.explain import beats as beats_lib


class GroupBeats(NamedTuple):
  """Average median beats of each group."""
  times: np.ndarray  # (W,) seconds from R
  leads: tuple[str, ...]  # the standard 12
  groups: tuple[str, ...]
  mean: np.ndarray  # (G, 12, W) mV; NaN where no record of the group has the lead
  lo: np.ndarray  # (G, 12, W): mean - 1.96 SE
  hi: np.ndarray  # (G, 12, W): mean + 1.96 SE
  n: np.ndarray  # (G,) records averaged per group
  skipped: dict[str, int]  # reason -> records


def record_median_beat(record: Mapping[str, Any], times: np.ndarray,
                       window: tuple[float, float]) -> np.ndarray | str:
  """(12, len(times)) median beat of one record on the time grid, or the reason it has none."""
  x = np.asarray(record["signal"], np.float64)
  fs = float(record["fs"])
  if x.shape[-1] < int((window[1] - window[0]) * fs) + 2:
    return "shorter than one beat window"
  clean = beats_lib.bandpass(np.where(np.isfinite(x), x, 0.0), fs, 0.5, 40.0)
  clean[~np.isfinite(x)] = np.nan
  try:
    r = beats_lib.detect_r_peaks(x, fs)
  except ValueError:
    return "no lead carries a signal"
  b = beats_lib.aligned_beats(clean, fs, r, window)
  if not len(b.r_peaks):
    return "no beat with a whole window"
  out = np.full((12, len(times)), np.nan)
  for i, name in enumerate(record["leads"]):
    if name in leads_lib.LEADS_12 and np.isfinite(b.median[i]).all():
      out[leads_lib.LEADS_12.index(name)] = np.interp(times, b.times, b.median[i])
  return out


def stratum_names(cuts: Sequence[float]) -> tuple[str, ...]:
  """"p < 0.05", "0.05 <= p < 0.15", "p >= 0.15" for cuts (0.05, 0.15)."""
  if not cuts:
    return ("all",)
  names = [f"p < {cuts[0]:g}"]
  names += [f"{a:g} <= p < {b:g}" for a, b in zip(cuts[:-1], cuts[1:])]
  return tuple(names + [f"p >= {cuts[-1]:g}"])


def groups_of(record_id: np.ndarray, values: np.ndarray, *, by: str, label: str,
              cuts: Sequence[float] = ()) -> tuple[dict[str, str], tuple[str, ...]]:
  """record_id -> group, and the groups' order: by="stratum" puts each record in the risk
  stratum of its mean predicted probability `values` (p == cut goes up, as the report's
  strata); by="label" splits on its truth `values` (> 0.5: "<label>", else "not <label>")."""
  record_id = np.asarray(record_id).astype(str)
  values = np.asarray(values, np.float64)
  uniq, inverse = np.unique(record_id, return_inverse=True)
  total = np.bincount(inverse, np.nan_to_num(values), minlength=len(uniq))
  count = np.bincount(inverse, np.isfinite(values), minlength=len(uniq))
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = total / count  # one value per record (repeats of a protocol averaged)
  ok = count > 0
  if by == "stratum":
    names = stratum_names(cuts)
    which = np.searchsorted(np.asarray(cuts, np.float64), mean, side="right")
  elif by == "label":
    names = (label, f"not {label}")
    which = np.where(mean > 0.5, 0, 1)
  else:
    raise ValueError(f"beats by {by!r}: must be 'stratum' or 'label'")
  return {str(r): names[w] for r, w, k in zip(uniq, which, ok) if k}, names


def group_beats(source: Any, groups: Mapping[str, str], *, window: tuple[float, float] = (
    -0.25, 0.45), fs: float = 250.0, order: Sequence[str] | None = None) -> GroupBeats:
  """Average median beats of the records in `groups` (record_id -> group name) read from
  `source` (an `ecgjax.data` Source); `order`: the groups' order in the result."""
  from ecgjax.data import sources  # pylint: disable=g-import-not-at-top
  times = np.linspace(window[0], window[1], int(round((window[1] - window[0]) * fs)) + 1)
  ids = source.metadata()["record_id"]
  index = {str(r): i for i, r in enumerate(ids)}
  names = tuple(order) if order is not None else tuple(sorted(set(groups.values())))
  sums = {g: [] for g in names}
  skipped: dict[str, int] = {}

  def skip(reason: str) -> None:
    skipped[reason] = skipped.get(reason, 0) + 1

  for rid, group in groups.items():
    if group not in sums:
      continue
    if rid not in index:
      skip("not in the data")
      continue
    try:
      beat = record_median_beat(source[index[rid]], times, window)
    except sources.BadRecordError as e:
      skip(f"unreadable ({e.reason})" if getattr(e, "reason", None) else "unreadable")
      continue
    if isinstance(beat, str):
      skip(beat)
      continue
    sums[group].append(beat)
  shape = (len(names), 12, len(times))
  mean, lo, hi = (np.full(shape, np.nan) for _ in range(3))
  n = np.zeros(len(names), np.int64)
  for g, name in enumerate(names):
    if not sums[name]:
      continue
    stack = np.stack(sums[name])  # (records, 12, W)
    n[g] = len(stack)
    have = np.isfinite(stack).sum(0)  # records with the lead, per (lead, time)
    total = np.nansum(stack, 0)
    m = np.where(have > 0, total / np.maximum(have, 1), np.nan)
    var = np.nansum((stack - m) ** 2, 0) / np.maximum(have - 1, 1)
    se = np.where(have > 1, np.sqrt(var / np.maximum(have, 1)), 0.0)
    mean[g], lo[g], hi[g] = m, m - 1.96 * se, m + 1.96 * se
  return GroupBeats(times, leads_lib.LEADS_12, names, mean.astype(np.float32),
                    lo.astype(np.float32), hi.astype(np.float32), n, skipped)


def plot(gb: GroupBeats, path: str, title: str = "") -> str:
  """One panel per lead (3 x 4, the standard layout), a line and band per group; PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, axes = plt.subplots(3, 4, figsize=(13, 8), sharex=True, sharey=True)
  colours = plt.get_cmap("viridis")(np.linspace(0.05, 0.85, max(len(gb.groups), 1)))
  for lead in range(12):
    ax = axes[lead % 3, lead // 3]  # columns I-III, aVR-aVF, V1-V3, V4-V6
    for g, name in enumerate(gb.groups):
      if not gb.n[g] or not np.isfinite(gb.mean[g, lead]).any():
        continue
      ax.fill_between(gb.times, gb.lo[g, lead], gb.hi[g, lead], color=colours[g], alpha=0.25,
                      lw=0)
      ax.plot(gb.times, gb.mean[g, lead], color=colours[g], lw=1.2,
              label=f"{name} (n={gb.n[g]})")
    ax.axvline(0.0, color="0.7", lw=0.6)
    ax.set_title(gb.leads[lead], fontsize=9, loc="left")
  for ax in axes[-1]:
    ax.set_xlabel("s from R")
  for ax in axes[:, 0]:
    ax.set_ylabel("mV")
  axes[0, 0].legend(fontsize=7, loc="upper left")
  fig.suptitle(title or "median beats per group (mean, 95% band)", fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)
  return path
