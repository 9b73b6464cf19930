"""`npy:FILE?fs=HZ`: a (records, leads, samples) NumPy array, memory-mapped."""

from __future__ import annotations

from collections.abc import Sequence
import csv
import os
from typing import Any

from absl import logging
import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import specs
from ecgjax.data.sources import Record, Source, make_record


def _read_ids_csv(csv_path: str, n: int) -> dict[str, np.ndarray] | None:
  """Reads ids.csv beside an array file: first column ids, optional patient_id/fold."""
  with open(csv_path, newline="") as f:
    rows = list(csv.reader(f))
  if not rows:
    return None
  header, body = [h.strip() for h in rows[0]], rows[1:]
  if len(body) != n:
    logging.warning(
        "%s has %d rows but the array beside it has %d records: ignoring it",
        csv_path, len(body), n)
    return None
  out = {"record_id": np.array([r[0].strip() for r in body])}
  cols = {h.lower(): j for j, h in enumerate(header)}
  if "patient_id" in cols:
    out["patient_id"] = np.array([r[cols["patient_id"]].strip() for r in body])
  fold_col = cols.get("fold", cols.get("strat_fold"))
  if fold_col is not None:
    try:
      out["fold"] = np.array([int(float(r[fold_col])) for r in body], np.int64)
    except ValueError as e:
      raise ValueError(f"{csv_path}: bad fold value: {e}") from None
  return out


class NpySource(Source):
  """A (N, leads, samples) .npy array, memory-mapped; float16 is widened on read.

  Record ids come from an `ids.csv` beside the file when it has one row per
  record (first column = id; optional `patient_id` and `fold` columns).
  """

  def __init__(self, path: str, fs: float, leads: Sequence[str] | None = None,
               spec: specs.DataSpec | None = None):
    self.path = os.fspath(path)
    self.spec = spec or specs.DataSpec("npy", self.path, {"fs": str(fs)})
    self.fs = float(fs)
    arr = self._open()
    if arr.ndim != 3:
      raise ValueError(
          f"{self.path}: expected a 3-D array (records, leads, samples), got "
          f"shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating)
            or np.issubdtype(arr.dtype, np.integer)):
      raise ValueError(f"{self.path}: expected a numeric array, got {arr.dtype}")
    n, n_leads, n_samples = arr.shape
    layout_hint = (
        f" (it looks like (records, samples, leads) = {arr.shape}: transpose "
        "it to (records, leads, samples))" if n_samples < n_leads else "")
    if leads is None:
      if n_leads != 12:
        raise ValueError(
            f"{self.path} has {n_leads} leads; name them with "
            f"?leads=I,II,... (12-lead files default to "
            f"{','.join(leads_lib.LEADS_12)}){layout_hint}")
      leads = leads_lib.LEADS_12
    self.leads = leads_lib.parse_leads(leads)
    if len(self.leads) != n_leads:
      raise ValueError(
          f"{self.path} has {n_leads} leads but leads= names "
          f"{len(self.leads)}: {','.join(self.leads)}{layout_hint}")
    self._array = arr
    self._n = n
    stem = os.path.splitext(os.path.basename(self.path))[0]
    ids_path = os.path.join(os.path.dirname(self.path), "ids.csv")
    table = _read_ids_csv(ids_path, n) if os.path.isfile(ids_path) else None
    table = table or {"record_id": np.array([f"{stem}-{i}" for i in range(n)])}
    self._record_id = table["record_id"]
    self._patient_id = table.get("patient_id", self._record_id)
    self._fold = table.get("fold", np.zeros(n, np.int64))

  def _open(self) -> np.ndarray:
    try:
      if os.path.isfile(self.path) and os.path.getsize(self.path) == 0:
        raise ValueError("the file is empty (0 bytes)")
      return np.load(self.path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
      raise FileNotFoundError(f"npy source: no such file {self.path}") from None
    except (ValueError, EOFError, OSError) as e:
      why = str(e)
      if "mmap length is greater than file size" in why:
        why = "truncated: the file holds fewer bytes than its header's shape needs"
      raise ValueError(f"{self.path}: cannot read as a .npy array: {why}") from None

  def __getstate__(self) -> dict[str, Any]:
    # Pickling a memmap would copy the whole file into the pickle; reopen instead.
    state = dict(self.__dict__)
    state["_array"] = None
    return state

  def __len__(self) -> int:
    return self._n

  def __getitem__(self, index: int) -> Record:
    index = self._check_index(index)
    if self._array is None:
      self._array = self._open()
    return make_record(
        signal=np.asarray(self._array[index], dtype=np.float32),
        fs=self.fs, leads=self.leads,
        record_id=self._record_id[index],
        patient_id=self._patient_id[index],
        fold=int(self._fold[index]))

  def metadata(self) -> dict[str, np.ndarray]:
    return {
        "record_id": self._record_id.copy(),
        "patient_id": self._patient_id.copy(),
        "fold": self._fold.copy(),
        "labels": np.zeros((self._n, 0), np.float32),
    }


@specs.register_format(
    "npy",
    options={
        "fs": specs.Option(specs.positive_float, None, "sampling rate in Hz (required)"),
        "leads": specs.Option(
            leads_lib.parse_leads, None,
            "names of the file's leads, in row order (default: the 12 standard "
            "leads when it has 12)"),
    },
    help="(N, leads, samples) NumPy array, memory-mapped",
    detect=lambda path: path.lower().endswith(".npy"))
def _open_npy(spec: specs.DataSpec, *, fs: float | None,
              leads: tuple[str, ...] | None) -> Source:
  if fs is None:
    raise ValueError(
        f"npy:{spec.path} needs ?fs=<Hz>: a .npy file does not store its "
        "sampling rate")
  return NpySource(spec.path, fs, leads, spec)
