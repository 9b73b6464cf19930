"""Random-access ECG sources: the record contract, generic wrappers, npy files.

A record is a plain dict (picklable, so grain worker processes can pass it):

  signal      float32 (n_leads, n_samples), physical units (mV) where known
  fs          float, sampling rate in Hz
  leads       tuple of canonical lead names, one per signal row
  record_id   str
  patient_id  str (= record_id when the data set has no patient ids)
  labels      float32 (n_labels,), multi-hot; shape (0,) when unlabelled
  fold        int, 0 when unknown
  lead_mask   float32 (n_leads,), optional: 0 marks a lead filled with zeros

Formats register a factory with `specs.register_format`; `open_source` parses a
spec, calls the factory and applies the common options (leads=, folds=) through
the wrappers below, so no reader re-implements them.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
import csv
import os
from typing import Any

from absl import logging
import numpy as np

from ecgjax.data import leads as leads_lib
from ecgjax.data import specs

Record = dict[str, Any]


class BadRecordError(ValueError):
  """A record that cannot be used (NaN, wrong shape, unreadable); names the record."""

  def __init__(self, record_id: str, reason: str):
    super().__init__(f"record {record_id!r}: {reason}")
    self.record_id = str(record_id)
    self.reason = reason

  def __reduce__(self):
    # Exceptions cross process boundaries in grain workers; the default pickling
    # would call __init__ with the formatted message only.
    return (type(self), (self.record_id, self.reason))


def make_record(
    signal: np.ndarray,
    fs: float,
    leads: Sequence[str],
    record_id: str,
    patient_id: str | None = None,
    labels: np.ndarray | Sequence[float] = (),
    fold: int = 0,
    lead_mask: np.ndarray | None = None,
) -> Record:
  """Builds a record dict with the contract's dtypes (signal/labels float32)."""
  rec = {
      "signal": np.asarray(signal, dtype=np.float32),
      "fs": float(fs),
      "leads": tuple(leads),
      "record_id": str(record_id),
      "patient_id": str(record_id if patient_id is None else patient_id),
      "labels": np.asarray(labels, dtype=np.float32).reshape(-1),
      "fold": int(fold),
  }
  if lead_mask is not None:
    rec["lead_mask"] = np.asarray(lead_mask, dtype=np.float32)
  return rec


def id_text(value: str) -> str:
  """An id as text: "15709.0" -> "15709" (CSV writers such as pandas store integer ids as floats)."""
  value = value.strip()
  try:
    f = float(value)
  except ValueError:
    return value
  return str(int(f)) if f.is_integer() else value


class Source(abc.ABC):
  """A random-access collection of records (see the module docstring)."""

  spec: specs.DataSpec | None = None
  label_names: tuple[str, ...] = ()
  leads: tuple[str, ...] = leads_lib.LEADS_12
  fs: float | None = None  # None when it varies per record.

  @abc.abstractmethod
  def __len__(self) -> int:
    """Number of records."""

  @abc.abstractmethod
  def __getitem__(self, index: int) -> Record:
    """Loads record `index` (0 <= index < len)."""

  @abc.abstractmethod
  def metadata(self) -> dict[str, np.ndarray]:
    """Per-record arrays without loading signals.

    record_id, patient_id: str (N,); fold: int64 (N,); labels: float32
    (N, n_labels). Splitting and probing read only this.
    """

  def _check_index(self, index: int) -> int:
    n = len(self)
    index = int(index)
    if index < 0:
      index += n
    if not 0 <= index < n:
      raise IndexError(f"index {index} out of range for {self!r} ({n} records)")
    return index

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.spec or ''})"


class LeadSelectedSource(Source):
  """Another source's records with a chosen lead list (missing: zeros, mask 0)."""

  def __init__(self, base: Source, leads: Sequence[str],
               spec: specs.DataSpec | None = None):
    self.base = base
    self.leads = leads_lib.parse_leads(leads)
    self.label_names = base.label_names
    self.fs = base.fs
    self.spec = spec or base.spec

  def __len__(self) -> int:
    return len(self.base)

  def __getitem__(self, index: int) -> Record:
    rec = dict(self.base[index])
    try:
      signal, mask = leads_lib.reorder(rec["signal"], rec["leads"], self.leads)
    except ValueError as e:
      raise BadRecordError(rec.get("record_id", index), str(e)) from None
    if "lead_mask" in rec:
      old, _ = leads_lib.reorder(
          np.asarray(rec["lead_mask"], np.float32)[:, None], rec["leads"],
          self.leads)
      mask = mask * old[:, 0]
    rec.update(signal=signal, leads=self.leads, lead_mask=mask)
    return rec

  def metadata(self) -> dict[str, np.ndarray]:
    return self.base.metadata()


class SubsetSource(Source):
  """The records of another source at the given indices, in that order."""

  def __init__(self, base: Source, indices: Sequence[int],
               spec: specs.DataSpec | None = None):
    self.base = base
    self.indices = np.asarray(indices, dtype=np.int64)
    self.leads = base.leads
    self.label_names = base.label_names
    self.fs = base.fs
    self.spec = spec or base.spec

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, index: int) -> Record:
    return self.base[int(self.indices[self._check_index(index)])]

  def metadata(self) -> dict[str, np.ndarray]:
    return {k: v[self.indices] for k, v in self.base.metadata().items()}


def select_folds(source: Source, folds: Sequence[int],
                 spec: specs.DataSpec | None = None) -> SubsetSource:
  """Keeps the records whose fold is in `folds` (uses metadata only)."""
  fold = source.metadata()["fold"]
  keep = np.flatnonzero(np.isin(fold, np.asarray(folds)))
  if keep.size == 0:
    raise ValueError(
        f"{spec or source.spec}: no records in folds {list(folds)}; folds "
        f"present: {sorted(set(fold.tolist()))}"
    )
  return SubsetSource(source, keep, spec)


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


def _detect_format(spec: specs.DataSpec) -> specs.DataSpec:
  """Resolves format "auto" by asking each registered format's `detect`."""
  hits = [name for name in specs.known_formats()
          if (info := specs.get_format(name)).detect is not None and info.detect(spec.path)]
  if len(hits) == 1:
    return specs.DataSpec(hits[0], spec.path, dict(spec.options))
  why = (f"it matches several formats ({', '.join(hits)})" if hits
         else "no format recognises it")
  raise ValueError(
      f"cannot detect the format of {spec.path!r}: {why}; write FORMAT:PATH with FORMAT "
      f"one of: {', '.join(specs.known_formats())}")


def _register_builtin_formats() -> None:
  # synthetic.py imports this module for Source, so it registers itself lazily; every
  # module of ecgjax/data/formats/ registers one reader, so adding a format touches no list.
  import importlib  # pylint: disable=g-import-not-at-top
  import pkgutil  # pylint: disable=g-import-not-at-top
  from ecgjax.data import formats, synthetic  # pylint: disable=g-import-not-at-top,unused-import
  for mod in pkgutil.iter_modules(formats.__path__):
    importlib.import_module(f"{formats.__name__}.{mod.name}")


def open_source(spec: str | specs.DataSpec) -> Source:
  """Opens a data spec ("npy:FILE?fs=250", "synthetic:1000") as a Source."""
  _register_builtin_formats()
  spec = specs.parse_spec(spec)
  if spec.format == "auto":
    spec = _detect_format(spec)
  info = specs.get_format(spec.format)
  opts = specs.parse_options(spec, info.all_options)
  source = info.factory(spec, **{k: opts[k] for k in info.options})
  source.spec = spec
  want = opts["leads"]
  if want is not None and tuple(source.leads) != want:
    source = LeadSelectedSource(source, want, spec)
  if opts["folds"] is not None and "folds" not in info.options:
    source = select_folds(source, opts["folds"], spec)
  return source
