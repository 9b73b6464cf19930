"""CPSC 2018 challenge files (`cpsc2018:DIR?fs=500&reference=PATH|none`).

DIR (searched recursively, sorted) holds MATLAB files with a struct `ECG` whose
fields are sex, age and data (12 x N in mV, leads I, II, III, aVR, aVL, aVF,
V1-V6, N = 3,000-72,000 in the full set); there is no header, and the challenge
states the rate (500 Hz), hence the default fs=500.

record_id = file path relative to DIR without ".mat"; patient_id = record_id
(CPSC 2018 has no patient ids); fold 0.

Labels come from the challenge's REFERENCE.csv (Recording, First_label,
Second_label, Third_label with codes 1-9) when one lies in DIR or `reference=`
names one: multi-hot over LABEL_NAMES, in code order 1-9. Without it the
records are unlabelled; `reference=none` ignores one that is there.
"""

from __future__ import annotations

import csv
import os

from absl import logging
import numpy as np
import scipy.io

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs

# The challenge's label codes 1..9, in that order.
LABEL_NAMES: tuple[str, ...] = (
    "Normal", "AF", "I-AVB", "LBBB", "RBBB", "PAC", "PVC", "STD", "STE")
_REFERENCE = "REFERENCE.csv"


def _list_mat(root: str) -> list[str]:
  out = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
    out += [("" if rel == "." else rel + "/") + f[:-4]
            for f in sorted(filenames) if f.lower().endswith(".mat")]
  return out


_LAYOUT_HINT = ("PhysioNet/CinC 2020-2021 .mat files ('val') come with .hea headers: open them "
                "as wfdb:DIR; CPSC 2019 ('ecg' / R-peak files) and annotation .mat files are not "
                "12-lead recordings of this layout")


def mat_variables(path: str) -> list[str] | None:
  """Names of the variables in a MATLAB file (header only, no data read); None if unreadable."""
  try:
    return [name for name, _, _ in scipy.io.whosmat(path)]
  except Exception:  # pylint: disable=broad-except  # scipy raises many types
    return None


def _split_layouts(root: str, ids: list[str]) -> tuple[list[str], list[tuple[str, list[str]]]]:
  """(CPSC 2018 record ids, [(id, variables)] of readable .mat files of another layout).

  A file that cannot even be listed stays a record: reading it then reports it as a bad
  CPSC 2018 record (truncated or corrupt), counted like any other."""
  keep, others = [], []
  for rid in ids:
    names = mat_variables(os.path.join(root, rid + ".mat"))
    if names is None or "ECG" in names:
      keep.append(rid)
    else:
      others.append((rid, names))
  return keep, others


def _describe_others(others: list[tuple[str, list[str]]]) -> str:
  shown = "; ".join(f"{rid}.mat holds {', '.join(names) or 'no variables'}"
                    for rid, names in others[:3])
  return shown + (f"; ... {len(others) - 3} more" if len(others) > 3 else "")


def _read_reference(path: str, ids: list[str]) -> np.ndarray:
  """(N, 9) multi-hot labels for `ids` (matched by file name) from REFERENCE.csv."""
  by_name: dict[str, np.ndarray] = {}
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.reader(f))
  if rows and rows[0] and rows[0][0].strip().lower() == "recording":
    rows = rows[1:]  # The challenge's header row.
  for r in rows:
    if not r or not r[0].strip():
      continue
    y = np.zeros(len(LABEL_NAMES), np.float32)
    for cell in r[1:]:
      cell = cell.strip()
      if not cell:
        continue
      try:
        code = int(float(cell))
      except ValueError:
        raise ValueError(f"cpsc2018: {path}: bad label {cell!r} in row {r}") from None
      if not 1 <= code <= len(LABEL_NAMES):
        raise ValueError(f"cpsc2018: {path}: label {code} outside 1-9 in row {r}")
      y[code - 1] = 1.0
    by_name[r[0].strip()] = y
  missing = [i for i in ids if os.path.basename(i) not in by_name]
  if missing:
    raise ValueError(
        f"cpsc2018: {path} has no row for {len(missing)} of {len(ids)} recordings "
        f"(first: {missing[0]}); pass reference=none to read them unlabelled")
  return np.stack([by_name[os.path.basename(i)] for i in ids])


class Cpsc2018Source(sources.Source):
  """CPSC 2018 .mat recordings (struct ECG), variable length, 12 leads."""

  def __init__(self, root: str, fs: float = 500.0, reference: str | None = None,
               spec: specs.DataSpec | None = None):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise ValueError(f"cpsc2018: no such directory {self.root}")
    self.spec = spec
    self.fs = float(fs)
    self.leads = leads_lib.LEADS_12
    ids = _list_mat(self.root)
    if not ids:
      raise ValueError(f"cpsc2018: no .mat files under {self.root}")
    ids, others = _split_layouts(self.root, ids)
    if not ids:
      raise ValueError(f"cpsc2018: no .mat file under {self.root} holds CPSC 2018's struct "
                       f"'ECG' ({_describe_others(others)}). {_LAYOUT_HINT}")
    if others:
      logging.warning("cpsc2018: %d .mat file(s) under %s are not CPSC 2018 recordings and are "
                      "left out: %s", len(others), self.root, _describe_others(others))
    self.other_files = tuple(rid for rid, _ in others)
    self._record_id = np.array(ids)
    default_ref = os.path.join(self.root, _REFERENCE)
    if reference is None and os.path.isfile(default_ref):
      reference = default_ref
    if reference is not None and reference.lower() != "none":
      if not os.path.isfile(reference):
        raise ValueError(f"cpsc2018: no such reference file {reference}")
      self.label_names = LABEL_NAMES
      self._labels = _read_reference(reference, ids)
    else:
      self.label_names = ()
      self._labels = np.zeros((len(ids), 0), np.float32)

  def __len__(self) -> int:
    return len(self._record_id)

  def _load(self, rid: str) -> np.ndarray:
    path = os.path.join(self.root, rid + ".mat")
    try:
      m = scipy.io.loadmat(path, variable_names=["ECG"])
    except FileNotFoundError:
      raise sources.BadRecordError(rid, f"missing file {path}") from None
    except Exception as e:  # scipy raises many types for corrupt files.
      raise sources.BadRecordError(rid, f"{path}: cannot read as MATLAB: {e}") from None
    ecg = m.get("ECG")
    names = ecg.dtype.names if isinstance(ecg, np.ndarray) else None
    if not names or "data" not in names or ecg.size != 1:
      raise sources.BadRecordError(
          rid, f"{path}: no struct 'ECG' with a 'data' field (not a CPSC 2018 file)")
    data = np.asarray(ecg["data"].reshape(-1)[0])
    if data.ndim != 2 or data.shape[0] != len(self.leads):
      raise sources.BadRecordError(
          rid, f"{path}: ECG.data has shape {data.shape}, expected (12, samples)")
    if data.shape[1] == 0:
      raise sources.BadRecordError(rid, f"{path}: zero-length record (0 samples)")
    if not np.issubdtype(data.dtype, np.number):
      raise sources.BadRecordError(rid, f"{path}: ECG.data is not numeric ({data.dtype})")
    bad = ~np.isfinite(data)
    if bad.any():
      lead = self.leads[int(np.flatnonzero(bad.any(axis=1))[0])]
      raise sources.BadRecordError(
          rid, f"{path}: {int(bad.sum())} NaN or inf samples, first in lead {lead}")
    return data

  def __getitem__(self, index: int) -> sources.Record:
    i = self._check_index(index)
    rid = str(self._record_id[i])
    return sources.make_record(self._load(rid), self.fs, self.leads, rid, rid,
                               self._labels[i], 0)

  def metadata(self) -> dict[str, np.ndarray]:
    return {
        "record_id": self._record_id.copy(),
        "patient_id": self._record_id.copy(),
        "fold": np.zeros(len(self), np.int64),
        "labels": self._labels.copy(),
    }


def detect(path: str) -> bool:
  """A directory with .mat files, no .hea headers (those are WFDB records), and CPSC 2018's
  struct 'ECG' in one of its first .mat files (CPSC 2019 and annotation files lack it)."""
  if not os.path.isdir(path):
    return False
  mats = []
  for dirpath, dirnames, filenames in os.walk(path):
    dirnames.sort()
    for f in sorted(filenames):
      low = f.lower()
      if low.endswith(".hea"):
        return False
      if low.endswith(".mat") and len(mats) < 3:
        mats.append(os.path.join(dirpath, f))
  return any("ECG" in (mat_variables(m) or ()) for m in mats)


@specs.register_format(
    "cpsc2018",
    options={
        "fs": specs.Option(specs.positive_float, 500.0,
                           "sampling rate in Hz (CPSC 2018 records at 500)"),
        "reference": specs.Option(
            str, None, "REFERENCE.csv with labels 1-9 (default: DIR/REFERENCE.csv "
            "if present; none: unlabelled)"),
    },
    help="CPSC 2018 .mat files (struct ECG: sex, age, data 12 x N)",
    detect=detect)
def _open_cpsc2018(spec: specs.DataSpec, *, fs: float,
                   reference: str | None) -> sources.Source:
  return Cpsc2018Source(spec.path, fs, reference, spec)
