"""Random-access ECG sources: the record contract and the generic wrappers.

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
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax import registry
from ecgjax.data import specs
from ecgjax.errors import MissingPathError, SpecError, UserError

Record = dict[str, Any]


class BadRecordError(UserError, ValueError):
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
    derived_mask: np.ndarray | None = None,
) -> Record:
  """Builds a record dict with the contract's dtypes (signal/labels float32).

  `derived_mask` (optional, per lead): 1 where the file did not store the lead and the reader
  computed it from others (III, aVR, aVL, aVF of an 8-lead export), 0 where it was recorded.
  """
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
  if derived_mask is not None:
    rec["derived_mask"] = np.asarray(derived_mask, dtype=np.float32)
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
  modality: str = "signal"  # "image": records carry `pixels` (printouts), not a signal

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
      mask = leads_lib.reorder_flags(rec["lead_mask"], rec["leads"], self.leads)
    if "derived_mask" in rec:
      rec["derived_mask"] = leads_lib.reorder_flags(rec["derived_mask"], rec["leads"],
                                                    self.leads)
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
    self.modality = base.modality
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


def _detect_format(spec: specs.DataSpec) -> specs.DataSpec:
  """Resolves format "auto" by asking each registered format's `detect`."""
  hits = [name for name in specs.known_formats()
          if (info := specs.get_format(name)).detect is not None and info.detect(spec.path)]
  if len(hits) == 1:
    return specs.DataSpec(hits[0], spec.path, dict(spec.options))
  why = (f"it matches several formats ({', '.join(hits)})" if hits
         else "no format recognises it")
  raise SpecError(
      f"cannot detect the format of {spec.path!r}: {why}; write FORMAT:PATH with FORMAT "
      f"one of: {', '.join(specs.known_formats())}")


def _register_builtin_formats() -> None:
  # Every module of ecgjax/data/formats/ registers one reader and imports this module for
  # Source; they are found by name (`ecgjax.registry`), so adding a format touches no list
  # and makes no import cycle.
  registry.load_all("ecgjax.data.formats")


def open_source(spec: str | specs.DataSpec) -> Source:
  """Opens a data spec ("npy:FILE?fs=250", "synthetic:1000") as a Source."""
  _register_builtin_formats()
  spec = specs.parse_spec(spec)
  if spec.format != "auto":
    info = specs.get_format(spec.format)
    if info.reads_path and not os.path.exists(spec.path):
      raise MissingPathError(f"data spec {str(spec)!r}: no such file or directory {spec.path!r}")
  elif not os.path.exists(spec.path):
    raise MissingPathError(f"data spec {str(spec)!r}: no such file or directory {spec.path!r}")
  else:
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
