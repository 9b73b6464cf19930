"""R-peak detection on a synthetic stress set and on PTB-XL strips.

  python bench/rpeak_stress.py                              # the table below, 30 min records
  python bench/rpeak_stress.py --minutes 5 --seeds 1        # quicker
  python bench/rpeak_stress.py --figures docs/figures       # also the README's two figures

For each condition, `--seeds` records of `--minutes` at 360 Hz from
`ecgjax.explain.stress.stress_record` (their beats known: sinus beats and premature ventricular
ones), scored by `ecgjax.explain.match_peaks` (each true beat matched to at most one detection
within 50 ms; 0.1 s at either end left out). Sensitivity and positive predictive value are over
all beats of the condition; "V Se" is the sensitivity on the premature ventricular beats alone.
Then the time `detect_r_peaks` takes per hour of 12-lead 360 Hz signal at three lengths (linear
time: the column stays flat). With `--figures DIR`: `rpeaks_stress.png` (ten seconds of the
hardest conditions, truth and detections marked) and `rpeaks_ptbxl.png` (PTB-XL strips of every
superclass, leads II and V1 at 500 Hz, the 12-lead detections marked) for checking by eye.
The JSON line is last, for scripts.
"""

import json
import os
import sys
import time

from absl import app, flags
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
SHARED = os.path.join(os.path.dirname(REPO), "shared", "data")

_MINUTES = flags.DEFINE_float("minutes", 30.0, "length of each stress record")
_SEEDS = flags.DEFINE_integer("seeds", 3, "stress records per condition")
_FIGURES = flags.DEFINE_string("figures", None, "write the two figures into this directory")
_PTBXL = flags.DEFINE_string("ptbxl", os.path.join(SHARED, "ptbxl"), "PTB-XL directory")

# name -> stress_record keywords. "clean" has neither wander nor muscle noise; the others add
# one difficulty each to the default record (wander 0.3 mV, muscle noise 0.03 mV RMS, 8% PVCs).
CONDITIONS = {
    "clean, 12 leads": dict(wander_mv=0.0, emg_mv=0.0),
    "clean, lead II": dict(wander_mv=0.0, emg_mv=0.0, lead="II"),
    "default, 12 leads": {},
    "default, lead II": dict(lead="II"),
    "inverted QRS: lead aVR": dict(lead="aVR"),
    "mostly negative QRS: V1": dict(lead="V1"),
    "every lead inverted": dict(invert=True),
    "20% PVCs, 12 leads": dict(pvc_rate=0.2),
    "20% PVCs, lead II": dict(pvc_rate=0.2, lead="II"),
    "wander 1 mV, 12 leads": dict(wander_mv=1.0),
    "wander 1 mV, lead II": dict(wander_mv=1.0, lead="II"),
    "muscle 0.06 mV, 12 leads": dict(emg_mv=0.06),
    "muscle 0.06 mV, lead II": dict(emg_mv=0.06, lead="II"),
    "muscle 0.1 mV, 12 leads": dict(emg_mv=0.1),
    "muscle 0.1 mV, lead II": dict(emg_mv=0.1, lead="II"),
}


def _score(kw: dict, seeds: int, seconds: float) -> dict:
  from ecgjax.explain import beats, stress  # pylint: disable=g-import-not-at-top
  tp = fn = fp = v_tp = v_n = 0
  for seed in range(seeds):
    rec = stress.stress_record(seed, seconds=seconds, **kw)
    found = beats.detect_r_peaks(rec.signal, rec.fs)
    n = rec.signal.shape[1]
    m = beats.match_peaks(found, rec.r_peaks, rec.fs, n_samples=n, edge_s=0.1)
    tp, fn, fp = tp + m["tp"], fn + m["fn"], fp + m["fp"]
    v = rec.r_peaks[rec.kinds == "V"]
    mv = beats.match_peaks(found, v, rec.fs, n_samples=n, edge_s=0.1)
    v_tp, v_n = v_tp + mv["tp"], v_n + mv["tp"] + mv["fn"]
  return {"beats": tp + fn, "pvcs": v_n, "fn": fn, "fp": fp,
          "sensitivity": tp / max(tp + fn, 1), "ppv": tp / max(tp + fp, 1),
          "pvc_sensitivity": v_tp / max(v_n, 1)}


def _timing() -> list[dict]:
  from ecgjax.explain import beats, stress  # pylint: disable=g-import-not-at-top
  rows = []
  for minutes in (10, 30, 120):
    rec = stress.stress_record(0, seconds=60.0 * minutes)
    t = time.perf_counter()
    beats.detect_r_peaks(rec.signal, rec.fs)
    dt = time.perf_counter() - t
    rows.append({"minutes": minutes, "seconds": dt, "seconds_per_hour": dt * 60.0 / minutes})
  return rows


def _stress_figure(path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from ecgjax.explain import beats, stress  # pylint: disable=g-import-not-at-top
  shown = ["20% PVCs, lead II", "inverted QRS: lead aVR", "wander 1 mV, lead II",
           "muscle 0.1 mV, lead II"]
  fig, axes = plt.subplots(len(shown), 1, figsize=(11, 2.0 * len(shown)), sharex=True)
  for ax, name in zip(axes, shown):
    rec = stress.stress_record(1, seconds=120.0, **CONDITIONS[name])
    found = beats.detect_r_peaks(rec.signal, rec.fs)
    lo, hi = int(60 * rec.fs), int(70 * rec.fs)
    t = np.arange(lo, hi) / rec.fs
    y = rec.signal[0, lo:hi]
    ax.plot(t, y, lw=0.7, color="k")
    for kind, colour in (("N", "tab:green"), ("V", "tab:orange")):
      r = rec.r_peaks[(rec.kinds == kind) & (rec.r_peaks >= lo) & (rec.r_peaks < hi)]
      ax.plot(r / rec.fs, np.full(len(r), y.max() + 0.15), "v", color=colour, ms=6,
              label=f"truth {kind}")
    f = found[(found >= lo) & (found < hi)]
    ax.plot(f / rec.fs, rec.signal[0, f], "o", mfc="none", mec="tab:red", ms=8,
            label="detected")
    ax.set_ylabel("mV")
    ax.set_title(f"{name} ({rec.leads[0]})", fontsize=9, loc="left")
  axes[0].legend(loc="upper right", fontsize=7, ncol=3)
  axes[-1].set_xlabel("s")
  fig.tight_layout()
  fig.savefig(path, dpi=80)
  plt.close(fig)


def _ptbxl_figure(path: str, directory: str) -> int:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from ecgjax.data import sources  # pylint: disable=g-import-not-at-top
  from ecgjax.explain import beats  # pylint: disable=g-import-not-at-top
  source = sources.open_source(f"ptbxl:{directory}?fs=500")
  meta = source.metadata()
  names = list(source.label_names)
  picked: list[tuple[str, int]] = []
  for label in names:  # the first two records of each superclass not shown yet
    seen = {i for _, i in picked}
    rows = [int(i) for i in np.flatnonzero(meta["labels"][:, names.index(label)] > 0)
            if int(i) not in seen]
    picked += [(label, i) for i in rows[:2]]
  fig, axes = plt.subplots(len(picked), 1, figsize=(11, 1.6 * len(picked)), sharex=True)
  for ax, (label, i) in zip(axes, picked):
    rec = source[i]
    x, fs, leads = rec["signal"], rec["fs"], list(rec["leads"])
    found = beats.detect_r_peaks(x, fs)
    t = np.arange(x.shape[1]) / fs
    for k, (lead, shift) in enumerate((("II", 0.0), ("V1", -2.0))):
      y = x[leads.index(lead)] + shift
      ax.plot(t, y, lw=0.6, color="k" if k == 0 else "tab:blue")
      ax.plot(found / fs, y[found], "o", mfc="none", mec="tab:red", ms=6)
    ax.set_title(f"{rec['record_id']} ({label}): II (black), V1 (blue, -2 mV); "
                 f"{len(found)} beats", fontsize=8, loc="left")
    ax.set_yticks([])
  axes[-1].set_xlabel("s")
  fig.tight_layout()
  fig.savefig(path, dpi=60)
  plt.close(fig)
  return len(picked)


def main(argv):
  del argv
  seconds = 60.0 * _MINUTES.value
  print(f"R-peak detection, stress set: {_SEEDS.value} x {_MINUTES.value:g} min at 360 Hz per "
        "condition, match within 50 ms")
  print(f"{'condition':28s} {'beats':>7s} {'PVCs':>6s} {'FN':>5s} {'FP':>5s} {'Se %':>7s} "
        f"{'PPV %':>7s} {'V Se %':>7s}")
  results = {}
  for name, kw in CONDITIONS.items():
    r = _score(kw, _SEEDS.value, seconds)
    results[name] = r
    print(f"{name:28s} {r['beats']:7d} {r['pvcs']:6d} {r['fn']:5d} {r['fp']:5d} "
          f"{100 * r['sensitivity']:7.2f} {100 * r['ppv']:7.2f} {100 * r['pvc_sensitivity']:7.2f}")
  timing = _timing()
  print("\ndetect_r_peaks time, 12 leads at 360 Hz")
  print(f"{'minutes':>8s} {'seconds':>8s} {'s per hour':>11s}")
  for row in timing:
    print(f"{row['minutes']:8d} {row['seconds']:8.2f} {row['seconds_per_hour']:11.2f}")
  if _FIGURES.value:
    os.makedirs(_FIGURES.value, exist_ok=True)
    _stress_figure(os.path.join(_FIGURES.value, "rpeaks_stress.png"))
    if os.path.isdir(_PTBXL.value):
      n = _ptbxl_figure(os.path.join(_FIGURES.value, "rpeaks_ptbxl.png"), _PTBXL.value)
      print(f"\nfigures in {_FIGURES.value} ({n} PTB-XL strips)")
    else:
      print(f"\n{_PTBXL.value} absent: only the stress figure")
  print(json.dumps({"stress": results, "timing": timing}))


if __name__ == "__main__":
  app.run(main)
