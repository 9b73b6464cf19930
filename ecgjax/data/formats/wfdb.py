"""Any folder of WFDB records (`wfdb:DIR?labels=auto|dx|none&fs=&checksum=1`).

DIR is searched recursively for `.hea` files (sorted by relative path) once at
open; each header is read when its record is. Signals come from `.dat` files
(formats 16, 212, ... see `wfdb_io`) or challenge-style `.mat` files (`val`).
Records are returned in the 12-lead canonical order: absent leads are zeros
with lead_mask 0. Channels that are not ECG leads (ABP in mmHg, PLETH in NU,
RESP, ... as MIMIC and PhysioNet/CinC records mix them in) are left out and
listed once in the log; only lead channels need voltage units and valid
samples. A channel name that is neither a known lead nor a known non-lead
signal is left out with a warning naming it, since it may be a lead spelt in a
way ecgjax does not know. Multi-segment records, skewed signals, several
samples per frame and formats 8, 310, 311, 508, 516, 524 are bad records
naming the record and the feature; the rest of the folder reads.

record_id   path relative to DIR without ".hea" ("g1/A0001", "files/p1000/...")
patient_id  the subject of a MIMIC-IV-ECG path (files/pNNNN/pXXXXXXXX/sYYYYYYYY/,
            the subject id without its "p"), else a `# Patient:` / `# Subject:`
            header comment, else the record id
fold        0 (WFDB folders carry no splits)
labels      dx: multi-hot over SNOMED codes of `# Dx:` comments (PhysioNet/CinC
            2020-2021); label_names = the sorted union of codes over all headers
            (numeric order), so every header is read at open (progress bar).
            none: no labels, no header read at open. auto (default): dx when
            any header has a `# Dx:` line (every header is read), else none.
fs          only for headers that omit their rate (WFDB's implicit 250 Hz is
            never assumed); a rate written in a header always wins.
"""

from __future__ import annotations

import os
import re

from absl import logging
import numpy as np
import tqdm

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data import wfdb_io

LABEL_MODES = ("auto", "dx", "none")
# MIMIC-IV-ECG: files/p1000/p10000032/s40689238/40689238.hea -> subject 10000032.
_MIMIC_RE = re.compile(r"(?:^|/)p\d{4}/p(\d+)/s\d+/")
_PATIENT_KEYS = ("patient", "patient_id", "patient id", "subject", "subject_id",
                 "subject id")
_PROGRESS_FROM = 1000  # Header scans shorter than this print no progress bar.


def _parse_mode(text: str) -> str:
  value = text.strip().lower()
  if value not in LABEL_MODES:
    raise ValueError(f"expected one of {', '.join(LABEL_MODES)}, got {text!r}")
  return value


def _parse_bool(text: str) -> bool:
  value = text.strip().lower()
  if value in ("1", "true", "yes", "on"):
    return True
  if value in ("0", "false", "no", "off"):
    return False
  raise ValueError(f"expected 1 or 0, got {text!r}")


def _walk_files(root: str):
  """Yields (relative path with '/', name) of files under root in sorted order."""
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames.sort()
    rel = os.path.relpath(dirpath, root).replace(os.sep, "/")
    for name in sorted(filenames):
      yield ("" if rel == "." else rel + "/") + name, name


def dx_codes(header: wfdb_io.Header) -> tuple[str, ...]:
  """SNOMED codes of a header's `# Dx:` comment ("164889003,59118001")."""
  text = header.info().get("dx", "")
  return tuple(c for c in re.split(r"[,\s]+", text) if c)


def _code_key(code: str) -> tuple[int, int, str]:
  # Numeric codes in numeric order, anything else after them alphabetically.
  return (0, int(code), "") if code.isdigit() else (1, 0, code)


class WfdbSource(sources.Source):
  """A folder of single-segment WFDB records (.hea + .dat or .mat)."""

  def __init__(self, root: str, labels: str = "auto", fs: float | None = None,
               checksum: bool = True, spec: specs.DataSpec | None = None):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise ValueError(f"wfdb: no such directory {self.root}")
    self.spec = spec
    self.leads = leads_lib.LEADS_12
    self.fs = None
    self.fallback_fs = fs
    self.checksum = checksum
    ids = [rel[:-4] for rel, name in _walk_files(self.root)
           if name.lower().endswith(".hea")]
    if not ids:
      raise ValueError(f"wfdb: no .hea header files under {self.root}")
    self._record_id = np.array(ids)
    path_pids = [m.group(1) if (m := _MIMIC_RE.search(r)) else "" for r in ids]
    self._path_pid = np.array(path_pids)
    self._patient_id: np.ndarray | None = None
    if all(path_pids):
      self._patient_id = self._path_pid.copy()
    self._warned: set[str] = set()  # channel names already reported in this process
    self.label_mode = labels
    self._labels = np.zeros((len(ids), 0), np.float32)
    if labels in ("dx", "auto"):
      self._scan_headers(with_labels=True)

  def _hea(self, i: int) -> str:
    return os.path.join(self.root, self._record_id[i] + ".hea")

  def _patient(self, i: int, header: wfdb_io.Header | None) -> str:
    if self._path_pid[i]:
      return str(self._path_pid[i])
    info = header.info() if header is not None else {}
    for key in _PATIENT_KEYS:
      if info.get(key):
        return info[key]
    return str(self._record_id[i])

  def _scan_headers(self, with_labels: bool) -> None:
    """Reads every header once: patient ids, and label names + labels when asked."""
    n = len(self._record_id)
    headers: list[wfdb_io.Header | None] = []
    bad = 0
    for i in tqdm.trange(n, desc=f"wfdb: reading headers under {self.root}",
                         unit="hdr", disable=n < _PROGRESS_FROM):
      try:
        headers.append(wfdb_io.read_header(self._hea(i)))
      except wfdb_io.WfdbError:
        headers.append(None)  # __getitem__ reports it as a bad record.
        bad += 1
    if bad:
      logging.warning("wfdb: %d of %d headers under %s cannot be parsed", bad, n, self.root)
    self._patient_id = np.array([self._patient(i, h) for i, h in enumerate(headers)])
    rates = {h.fs for h in headers if h is not None}
    if len(rates) == 1 and None not in rates and not bad:
      self.fs = rates.pop()
    if not with_labels:
      return
    codes = [dx_codes(h) if h is not None else () for h in headers]
    names = sorted({c for cs in codes for c in cs}, key=_code_key)
    if self.label_mode == "auto":
      # Decided from every header, not the first: a folder whose first record lacks a
      # '# Dx:' line but whose others have one is labelled.
      self.label_mode = "dx" if names else "none"
      if not names:
        return
    if not names:
      raise ValueError(
          f"wfdb: labels=dx but no header under {self.root} has a '# Dx:' line")
    self.label_names = tuple(names)
    self._index = {c: j for j, c in enumerate(names)}
    self._labels = np.zeros((n, len(names)), np.float32)
    for i, cs in enumerate(codes):
      self._labels[i, [self._index[c] for c in cs]] = 1.0
    unlabelled = sum(1 for h, cs in zip(headers, codes) if h is not None and not cs)
    if unlabelled:
      logging.warning("wfdb: %d headers under %s have no '# Dx:' codes (all-zero labels)",
                      unlabelled, self.root)

  def __len__(self) -> int:
    return len(self._record_id)

  def __getitem__(self, index: int) -> sources.Record:
    i = self._check_index(index)
    rid = str(self._record_id[i])
    hea = self._hea(i)
    try:
      header = wfdb_io.read_header(hea)
      fs = header.fs or self.fallback_fs
      if fs is None:
        raise wfdb_io.WfdbError(
            f"{hea} gives no sampling rate; pass ?fs=<Hz> for such headers")
      names = header.lead_names
      rows, known, unknown = wfdb_io.classify_channels(names)
      self._report_channels(hea, known, unknown)
      if not rows:
        raise wfdb_io.WfdbError(
            f"{hea}: no standard ECG lead names among channels {list(names)}")
      signal = wfdb_io.read_signals(header, self.checksum, rows)
      signal, mask = wfdb_io.to_leads(signal, [names[r] for r in rows], self.leads, hea)
    except wfdb_io.WfdbError as e:
      raise sources.BadRecordError(rid, str(e)) from None
    labels = np.zeros(len(self.label_names), np.float32)
    if self.label_mode == "dx":
      for c in dx_codes(header):
        if c in self._index:  # A header edited since open may name new codes.
          labels[self._index[c]] = 1.0
    return sources.make_record(signal, fs, self.leads, rid, self._patient(i, header),
                               labels, 0, lead_mask=mask)

  def _report_channels(self, hea: str, known: list[str], unknown: list[str]) -> None:
    """Logs once per process which channels are left out: known non-leads as info, names
    that are not recognised at all as a warning naming them."""
    new_unknown = [n for n in unknown if f"?{n}" not in self._warned]
    if new_unknown:
      logging.warning("wfdb: %s: channel(s) %s are not recognised ECG lead names and are left "
                      "out (a lead spelt another way? rename it in the header)", hea,
                      ", ".join(repr(n) for n in new_unknown))
      self._warned.update(f"?{n}" for n in new_unknown)
    key = ",".join(known)
    if known and key not in self._warned:
      logging.info("wfdb: %s: non-lead channel(s) %s left out (only ECG leads are read)",
                   hea, ", ".join(known))
      self._warned.add(key)

  def metadata(self) -> dict[str, np.ndarray]:
    if self._patient_id is None:
      # Patient comments live in the headers; read them once, never the signals.
      self._scan_headers(with_labels=False)
    return {
        "record_id": self._record_id.copy(),
        "patient_id": self._patient_id.copy(),
        "fold": np.zeros(len(self), np.int64),
        "labels": self._labels.copy(),
    }


def detect(path: str) -> bool:
  """A directory with .hea files somewhere below it that is not a PTB-XL release."""
  if not os.path.isdir(path) or os.path.isfile(os.path.join(path, "ptbxl_database.csv")):
    return False
  return any(name.lower().endswith(".hea") for _, name in _walk_files(path))


@specs.register_format(
    "wfdb",
    options={
        "labels": specs.Option(
            _parse_mode, "auto",
            "dx (SNOMED codes of '# Dx:' comments) | none | auto (dx if the first "
            "header has '# Dx:')"),
        "fs": specs.Option(
            specs.positive_float, None,
            "sampling rate for headers that omit it (a header's own rate wins)"),
        "checksum": specs.Option(
            _parse_bool, True, "1: reject signals whose WFDB checksum mismatches"),
    },
    help="folder of WFDB records (.hea + .dat formats 16/212/..., or .hea + .mat)",
    detect=detect)
def _open_wfdb(spec: specs.DataSpec, *, labels: str, fs: float | None,
               checksum: bool) -> sources.Source:
  return WfdbSource(spec.path, labels, fs, checksum, spec)
