"""What the one-file-one-record hospital formats share (muse, dicom, edf, aecg).

Each of them finds its files by content under a file or a directory, names a record by its path,
reads a waveform into the 12 standard leads (deriving the limb leads of an 8-lead record), and
reports what the file holds beside the signal. A format module supplies `read_file` (and a
cheaper `patient_of` where it has one); `PerFileSource` does the rest. Private module (`_`): the
format registry does not load it as a format.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
import itertools
import os
import re
from typing import Any

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs


def iter_files(root: str) -> Iterator[str]:
  """Files under root (or root itself), in sorted order, lazily."""
  if os.path.isfile(root):
    yield root
    return
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    for f in sorted(filenames):
      yield os.path.join(dirpath, f)


def head_text(path: str, n: int = 4096) -> str:
  """The first bytes of a file as text, decoded by its byte-order mark (UTF-16) or as Latin-1
  (enough to find a root element name in any of the encodings these exports come in)."""
  try:
    with open(path, "rb") as f:
      head = f.read(n)
  except OSError:
    return ""
  if head.startswith((b"\xff\xfe", b"\xfe\xff")):
    return head.decode("utf-16", errors="ignore")
  return head.decode("latin-1")


def detect_in(path: str, is_format: Callable[[str], bool], first: int = 5) -> bool:
  """A file of the format, or a directory whose first few files include one."""
  return any(is_format(p) for p in itertools.islice(iter_files(path), first))


def standard_leads(rows: Sequence[np.ndarray], names: Sequence[str], fs: float,
                   left_out: Sequence[str]) -> dict[str, Any]:
  """{"signal" (12, n) mV in LEADS_12 order, "lead_mask", "fs", "derived", "left_out"} of the
  rows (mV, one per lead in `names`), with III, aVR, aVL, aVF derived where absent."""
  signal, all_names, derived = leads_lib.derive_limb_leads(np.stack(rows), names)
  signal, mask = leads_lib.reorder(signal.astype(np.float32), all_names, leads_lib.LEADS_12)
  return {"signal": signal, "lead_mask": mask, "fs": float(fs), "derived": derived,
          "left_out": tuple(left_out)}


class PerFileSource(sources.Source):
  """One record per file of a format, in the 12 standard leads (absent ones masked).

  Subclasses set `format_name`, `what` (the error's words for a file of the format) and
  `is_format`, and implement `read_file(path, rid) -> (waveform, patient id, extra info)`,
  where waveform is a `standard_leads` dict; `patient_of` may read less than the whole file.
  """

  format_name = ""
  what = ""
  strip_suffix: str | None = None  # e.g. ".xml": left off the record ids
  waveforms: tuple[str, ...] = ()  # the `waveform=` choices, the first the default

  def __init__(self, root: str, waveform: str | None = None,
               spec: specs.DataSpec | None = None):
    if waveform is None and self.waveforms:
      waveform = self.waveforms[0]
    self.waveform = waveform
    if self.waveforms and self.waveform not in self.waveforms:
      raise ValueError(f"{self.format_name}: waveform={waveform!r}: one of "
                       f"{', '.join(self.waveforms)}")
    self.root, self.spec = os.fspath(root), spec
    self.fs, self.leads = None, leads_lib.LEADS_12  # the rate is read per file
    files = [p for p in iter_files(self.root) if self.is_format(p)]
    if not files:
      raise ValueError(f"{self.format_name}: no {self.what} at {self.root}")
    base = self.root if os.path.isdir(self.root) else os.path.dirname(self.root)
    ids = [os.path.relpath(p, base) for p in files]
    if self.strip_suffix:
      ids = [re.sub(re.escape(self.strip_suffix) + "$", "", i, flags=re.I) for i in ids]
    self._paths, self._record_id = files, np.array(ids)
    self._patients: np.ndarray | None = None

  @staticmethod
  def is_format(path: str) -> bool:
    """True when the file is one of this format's (by content)."""
    raise NotImplementedError

  def read_file(self, path: str, rid: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(standard_leads waveform, patient id or "", extra info); BadRecordError if unusable."""
    raise NotImplementedError

  def patient_of(self, path: str, rid: str) -> str:
    """The file's patient id or ""; BadRecordError when it cannot be read."""
    return self.read_file(path, rid)[1]

  def __len__(self) -> int:
    return len(self._paths)

  def _entry(self, index: int) -> tuple[str, str]:
    i = self._check_index(index)
    return str(self._record_id[i]), self._paths[i]

  def info(self, index: int) -> dict[str, Any]:
    """What a record's file says beside the signal: patient id, the format's own fields, the
    rate, and the leads derived and left out."""
    rid, path = self._entry(index)
    w, patient, extra = self.read_file(path, rid)
    return {"patient_id": patient, **extra, "fs": w["fs"], "derived_leads": list(w["derived"]),
            "left_out_channels": list(w["left_out"])}

  def __getitem__(self, index: int) -> sources.Record:
    rid, path = self._entry(index)
    w, patient, _ = self.read_file(path, rid)
    derived = np.array([name in w["derived"] for name in self.leads], np.float32)
    return sources.make_record(w["signal"], w["fs"], self.leads, rid, patient or rid, (), 0,
                               lead_mask=w["lead_mask"], derived_mask=derived)

  def metadata(self) -> dict[str, np.ndarray]:
    if self._patients is None:  # one read per file, once
      ids = []
      for path, rid in zip(self._paths, self._record_id):
        try:
          ids.append(self.patient_of(path, str(rid)) or str(rid))
        except sources.BadRecordError:
          ids.append(str(rid))  # its record fails, counted, where it is read
      self._patients = np.array(ids)
    n = len(self)
    return {"record_id": self._record_id.copy(), "patient_id": self._patients.copy(),
            "fold": np.zeros(n, np.int64), "labels": np.zeros((n, 0), np.float32)}
