"""CODE-15% HDF5 files (`code15:DIR_OR_FILE?csv=PATH&scale=1`).

Each file holds `tracings` (N, 4096, 12) float32 at 400 Hz, leads DI, DII, DIII,
aVR, aVL, aVF, V1-V6, and `exam_id` (N,). A directory means its
exams_part*.hdf5 files (in part-number order), or every .hdf5/.h5 file when it
has none of those. Rows with exam_id 0 are filler at the end of a file and are
skipped.

Recordings shorter than 4096 samples were zero-padded on both sides, so the
leading and trailing samples at which all 12 leads are exactly 0 are trimmed
(zeros inside the recording are kept); an all-zero tracing is a bad record.

Labels: exams.csv beside the files (or `csv=`), columns exam_id, patient_id and
the six flags LABEL_NAMES, in that order; without it the exams are unlabelled
and patient_id = exam_id. record_id = exam_id; fold 0.

Amplitude: the authors document the stored values both as 1e-4 V units and as
"multiply by 1000 to get V" (= mV); `scale` (default 1) multiplies the stored
values, i.e. they are read as mV unless told otherwise.

h5py handles cannot be pickled, so each process opens the files on first use.
"""

from __future__ import annotations

import csv
import os
import re
import threading
from typing import Any

from absl import logging
import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs

LABEL_NAMES: tuple[str, ...] = ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")
FS = 400.0
_SUFFIXES = (".hdf5", ".h5")
_PART_RE = re.compile(r"^exams_part(\d+)\.hdf5$", re.IGNORECASE)


def _h5py() -> Any:
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ImportError("the code15 format needs h5py: pip install h5py") from None
  return h5py


def _list_files(path: str) -> list[str]:
  if os.path.isfile(path):
    return [path]
  if not os.path.isdir(path):
    raise ValueError(f"code15: no such file or directory {path}")
  names = os.listdir(path)
  parts = sorted((int(m.group(1)), n) for n in names if (m := _PART_RE.match(n)))
  chosen = [n for _, n in parts] or sorted(n for n in names if n.lower().endswith(_SUFFIXES))
  if not chosen:
    raise ValueError(f"code15: no exams_part*.hdf5 (or .hdf5/.h5) files in {path}")
  return [os.path.join(path, n) for n in chosen]


def _flag(text: str, where: str) -> float:
  value = text.strip().lower()
  if value in ("true", "1", "1.0"):
    return 1.0
  if value in ("false", "0", "0.0", ""):
    return 0.0
  raise ValueError(f"code15: {where}: bad label value {text!r}")


def _read_exams(path: str) -> dict[int, tuple[str, np.ndarray]]:
  """exam_id -> (patient_id, labels) from exams.csv."""
  with open(path, newline="", encoding="utf-8") as f:
    reader = csv.DictReader(f)
    missing = [c for c in ("exam_id", "patient_id", *LABEL_NAMES)
               if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(f"code15: {path} lacks column(s) {', '.join(missing)}")
    out = {}
    for row in reader:
      eid = int(float(row["exam_id"]))
      where = f"{path}, exam {eid}"
      out[eid] = (sources.id_text(row["patient_id"]) or str(eid),
                  np.array([_flag(row[c], where) for c in LABEL_NAMES], np.float32))
  return out


def _part_ids(h5py: Any, f: str) -> np.ndarray:
  """exam_id of one part file; ValueError naming the file if it cannot be used."""
  try:
    with h5py.File(f, "r") as h:
      if "tracings" not in h or "exam_id" not in h:
        raise ValueError(f"{f} lacks the 'tracings' or 'exam_id' dataset")
      ids = np.asarray(h["exam_id"][:]).astype(np.int64).reshape(-1)
      shape = h["tracings"].shape
  except (OSError, KeyError, TypeError) as e:
    raise ValueError(f"cannot open {f} as HDF5: {e}") from None
  if len(shape) != 3 or shape[0] != len(ids) or shape[2] != 12:
    raise ValueError(f"{f}: tracings of shape {shape} do not match {len(ids)} exam ids x "
                     "samples x 12 leads")
  return ids


class Code15Source(sources.Source):
  """CODE-15% exams from one or several HDF5 files, trimmed of zero padding."""

  def __init__(self, path: str, csv_path: str | None = None, scale: float = 1.0,
               spec: specs.DataSpec | None = None):
    h5py = _h5py()
    self.path = os.fspath(path)
    self.spec = spec
    self.fs = FS
    self.leads = leads_lib.LEADS_12
    self.scale = float(scale)
    self.files = _list_files(self.path)
    file_idx, rows, exam_ids = [], [], []
    good_files, self.skipped_files = [], []
    for f in self.files:
      try:
        ids = _part_ids(h5py, f)
      except ValueError as e:
        # One unreadable part (truncated download, wrong file) costs its exams, not the rest.
        logging.warning("code15: skipping %s", e)
        self.skipped_files.append((f, str(e)))
        continue
      k = len(good_files)
      good_files.append(f)
      keep = np.flatnonzero(ids != 0)  # exam_id 0 marks filler rows.
      file_idx.append(np.full(len(keep), k, np.int64))
      rows.append(keep)
      exam_ids.append(ids[keep])
    if not good_files:
      raise ValueError("code15: no readable part: " + "; ".join(
          why for _, why in self.skipped_files))
    self.files = good_files
    self._file = np.concatenate(file_idx)
    self._row = np.concatenate(rows)
    ids = np.concatenate(exam_ids)
    if len(np.unique(ids)) != len(ids):
      logging.warning("code15: %s holds %d repeated exam ids", self.path,
                      len(ids) - len(np.unique(ids)))
    self._record_id = ids.astype(str)
    base = self.path if os.path.isdir(self.path) else os.path.dirname(self.path)
    if csv_path is None and os.path.isfile(os.path.join(base, "exams.csv")):
      csv_path = os.path.join(base, "exams.csv")
    if csv_path is None:
      self.label_names = ()
      self._patient_id = self._record_id.copy()
      self._labels = np.zeros((len(ids), 0), np.float32)
    else:
      if not os.path.isfile(csv_path):
        raise ValueError(f"code15: no such csv file {csv_path}")
      table = _read_exams(csv_path)
      absent = [e for e in ids.tolist() if e not in table]
      if absent:
        raise ValueError(
            f"code15: {csv_path} has no row for {len(absent)} exams of {self.path} "
            f"(first: exam_id {absent[0]})")
      self.label_names = LABEL_NAMES
      self._patient_id = np.array([table[e][0] for e in ids.tolist()])
      self._labels = np.stack([table[e][1] for e in ids.tolist()])
    self._handles: dict[int, Any] = {}
    self._pid = os.getpid()
    self._lock = threading.Lock()  # grain may read with several threads.

  def __getstate__(self) -> dict[str, Any]:
    state = dict(self.__dict__)
    # Handles and locks do not pickle; the receiving process opens its own.
    state["_handles"], state["_lock"] = {}, None
    return state

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def _tracings(self, k: int) -> Any:
    if self._pid != os.getpid():
      # HDF5 handles (and a lock perhaps held) inherited through fork are unsafe.
      self._handles, self._lock, self._pid = {}, threading.Lock(), os.getpid()
    with self._lock:
      if k not in self._handles:
        self._handles[k] = _h5py().File(self.files[k], "r")
      return self._handles[k]["tracings"]

  def __len__(self) -> int:
    return len(self._record_id)

  def __getitem__(self, index: int) -> sources.Record:
    i = self._check_index(index)
    rid = str(self._record_id[i])
    k, row = int(self._file[i]), int(self._row[i])
    try:
      x = np.asarray(self._tracings(k)[row], np.float32)  # (samples, 12)
    except (OSError, KeyError) as e:
      raise sources.BadRecordError(rid, f"{self.files[k]}, row {row}: {e}") from None
    bad = ~np.isfinite(x)
    if bad.any():
      raise sources.BadRecordError(
          rid, f"{self.files[k]}, row {row}: {int(bad.sum())} NaN or inf samples")
    active = np.flatnonzero(np.any(x != 0, axis=1))
    if active.size == 0:
      raise sources.BadRecordError(rid, f"{self.files[k]}, row {row}: all-zero tracing")
    x = x[active[0]:active[-1] + 1].T
    if self.scale != 1.0:
      x = x * np.float32(self.scale)
    return sources.make_record(x, self.fs, self.leads, rid, self._patient_id[i],
                               self._labels[i], 0)

  def metadata(self) -> dict[str, np.ndarray]:
    return {
        "record_id": self._record_id.copy(),
        "patient_id": self._patient_id.copy(),
        "fold": np.zeros(len(self), np.int64),
        "labels": self._labels.copy(),
    }


def detect(path: str) -> bool:
  """An .hdf5/.h5 file, or a directory holding exams_part*.hdf5 files."""
  if os.path.isfile(path):
    return path.lower().endswith(_SUFFIXES)
  return os.path.isdir(path) and any(_PART_RE.match(n) for n in os.listdir(path))


@specs.register_format(
    "code15",
    options={
        "csv": specs.Option(str, None, "exams.csv with labels and patient ids "
                            "(default: exams.csv beside the files, if any)"),
        "scale": specs.Option(specs.positive_float, 1.0,
                              "multiplier from stored values to mV (default 1)"),
    },
    help="CODE-15% HDF5 (tracings (N, 4096, 12) at 400 Hz) + exams.csv",
    detect=detect)
def _open_code15(spec: specs.DataSpec, *, csv: str | None,  # pylint: disable=redefined-outer-name
                 scale: float) -> sources.Source:
  return Code15Source(spec.path, csv, scale, spec)
