"""Matplotlib figures the engine writes while training (headless, Agg backend)."""

from __future__ import annotations

from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_reconstruction(signal: np.ndarray, recon: np.ndarray, mask: np.ndarray,
                        lead_names: Sequence[str], patch_size: int, path: str,
                        leads_to_show: Sequence[str] = ("I", "II", "V1", "V5"),
                        fs: float = 250.0) -> None:
  """Input (black), masked spans (grey) and the model's reconstruction of them (red).

  signal/recon: (records, leads, samples); mask: (records, leads, patches), 1 = masked.
  """
  rows = [i for i, n in enumerate(lead_names) if n in leads_to_show] or list(
      range(min(4, len(lead_names))))
  n_rec = signal.shape[0]
  fig, axes = plt.subplots(len(rows), n_rec, figsize=(7 * n_rec, 1.7 * len(rows)),
                           squeeze=False, sharex=True)
  t = np.arange(signal.shape[-1]) / fs
  for c in range(n_rec):
    for r, lead in enumerate(rows):
      ax = axes[r][c]
      for j in np.flatnonzero(mask[c, lead] > 0.5):
        lo, hi = j * patch_size, (j + 1) * patch_size
        ax.axvspan(t[lo], t[min(hi, len(t) - 1)], color="0.9", lw=0)
        ax.plot(t[lo:hi], recon[c, lead, lo:hi], color="tab:red", lw=0.9)
      ax.plot(t, signal[c, lead], color="black", lw=0.6)
      ax.set_ylabel(lead_names[lead], rotation=0, labelpad=14)
      ax.tick_params(labelsize=7)
      if r == 0:
        ax.set_title(f"record {c}: input (black), masked patches (grey), reconstruction (red)",
                     fontsize=8)
    axes[-1][c].set_xlabel("time (s)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
