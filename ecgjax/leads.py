"""ECG lead names: canonical spelling, parsing and reordering.

Every array in ecgjax that has a lead axis carries the names of its leads; code
that changes the lead order goes through `reorder`, which fills absent leads
with zeros and says so in a mask instead of silently shifting rows.
"""

from __future__ import annotations

from collections.abc import Sequence
import re

import numpy as np

LEADS_12: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF",
    "V1", "V2", "V3", "V4", "V5", "V6",
)
LIMB_LEADS: tuple[str, ...] = LEADS_12[:6]
PRECORDIAL_LEADS: tuple[str, ...] = LEADS_12[6:]

# Named groups accepted wherever a lead list is parsed ("leads=limb").
LEAD_GROUPS: dict[str, tuple[str, ...]] = {
    "12": LEADS_12,
    "all": LEADS_12,
    "limb": LIMB_LEADS,
    "precordial": PRECORDIAL_LEADS,
    "chest": PRECORDIAL_LEADS,
}

_INDEX = {name: i for i, name in enumerate(LEADS_12)}


def _alias_table() -> dict[str, str]:
  table = {name.lower(): name for name in LEADS_12}
  # Roman numerals with the "D" prefix are the usual spelling in Spanish and
  # Portuguese exports (e.g. CODE-15 documentation, many Holter tools).
  table.update({"di": "I", "dii": "II", "diii": "III"})
  # MIT-BIH's "modified lead II" is placed close enough to II that datasets mix
  # them freely; we follow that convention rather than reject such files.
  table["mlii"] = "II"
  for k in range(1, 7):
    # European exports name the chest electrodes C1..C6.
    table[f"c{k}"] = f"V{k}"
  return table


_ALIASES = _alias_table()


def canonical_lead(name: str) -> str:
  """Returns the canonical spelling of a lead name ("DII", "lead avr" -> "II", "aVR")."""
  if not isinstance(name, str):
    raise ValueError(f"lead name must be a string, got {name!r}")
  key = re.sub(r"[\s_\-]+", "", name.strip().lower())
  if key.startswith("lead") and len(key) > 4:
    key = key[4:]
  try:
    return _ALIASES[key]
  except KeyError:
    raise ValueError(
        f"unknown lead name {name!r}; known leads: {', '.join(LEADS_12)} "
        "(aliases: DI/DII/DIII, AVR/AVL/AVF, MLII, C1-C6, 'lead X')"
    ) from None


def parse_leads(leads: str | Sequence[str]) -> tuple[str, ...]:
  """Parses "I,II,V1", a sequence of names or a group ("limb") into canonical names."""
  if isinstance(leads, str):
    text = leads.strip()
    if text.lower() in LEAD_GROUPS:
      return LEAD_GROUPS[text.lower()]
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
  else:
    parts = list(leads)
  if not parts:
    raise ValueError(f"empty lead list {leads!r}")
  names = tuple(canonical_lead(p) for p in parts)
  if len(set(names)) != len(names):
    dupes = sorted({n for n in names if names.count(n) > 1})
    raise ValueError(f"lead list {leads!r} names {', '.join(dupes)} twice")
  return names


def lead_indices(names: str | Sequence[str]) -> np.ndarray:
  """Returns the positions of `names` in LEADS_12 as an int array."""
  return np.array([_INDEX[n] for n in parse_leads(names)], dtype=np.int64)


def reorder(
    signal: np.ndarray,
    from_leads: Sequence[str],
    to_leads: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
  """Reorders rows of a (leads, samples) array; returns (signal, lead_mask).

  Leads of `to_leads` absent from `from_leads` become rows of zeros with mask 0,
  so a consumer can tell a missing lead from a flat one.
  """
  src = parse_leads(from_leads)
  dst = parse_leads(to_leads)
  if signal.ndim != 2 or signal.shape[0] != len(src):
    raise ValueError(
        f"signal of shape {signal.shape} does not match {len(src)} leads {src}"
    )
  mask = np.array([n in src for n in dst], dtype=np.float32)
  if src == dst:
    return signal, mask
  pos = {n: i for i, n in enumerate(src)}
  out = np.zeros((len(dst), signal.shape[1]), dtype=signal.dtype)
  for j, n in enumerate(dst):
    if n in pos:
      out[j] = signal[pos[n]]
  return out, mask


def reorder_flags(flags: np.ndarray, from_leads: Sequence[str], to_leads: Sequence[str]
                  ) -> np.ndarray:
  """A per-lead 0/1 vector (a lead mask, a derived mask) moved like `reorder` moves rows:
  float32 in `to_leads` order, 0 for a lead `from_leads` lacks."""
  moved, present = reorder(np.asarray(flags, np.float32)[:, None], from_leads, to_leads)
  return moved[:, 0] * present


# The four limb leads that follow from I and II (Einthoven: III = II - I; Goldberger's augmented
# leads: aVR = -(I + II) / 2, aVL = I - II / 2, aVF = II - I / 2), as (coefficient of I, of II).
DERIVED_LIMB: dict[str, tuple[float, float]] = {
    "III": (-1.0, 1.0), "aVR": (-0.5, -0.5), "aVL": (1.0, -0.5), "aVF": (-0.5, 1.0),
}


def derive_limb_leads(signal: np.ndarray, names: Sequence[str]
                      ) -> tuple[np.ndarray, tuple[str, ...], tuple[str, ...]]:
  """Adds III, aVR, aVL and aVF computed from I and II where the record lacks them.

  Formats that store 8 leads (I, II, V1-V6: GE MUSE among them) leave the other four to the
  reader; they are exact linear combinations, so a derived lead is a present lead. Returns
  (signal with the derived rows appended, its lead names, the names derived); unchanged when I
  or II is missing or nothing is absent. Computed in float64, returned in signal's dtype.
  """
  src = parse_leads(names)
  if signal.ndim != 2 or signal.shape[0] != len(src):
    raise ValueError(f"signal of shape {signal.shape} does not match {len(src)} leads {src}")
  missing = tuple(n for n in DERIVED_LIMB if n not in src)
  if not missing or "I" not in src or "II" not in src:
    return signal, src, ()
  lead_i = signal[src.index("I")].astype(np.float64)
  lead_ii = signal[src.index("II")].astype(np.float64)
  rows = [DERIVED_LIMB[n][0] * lead_i + DERIVED_LIMB[n][1] * lead_ii for n in missing]
  out = np.concatenate([signal, np.stack(rows).astype(signal.dtype)])
  return out, src + missing, missing
