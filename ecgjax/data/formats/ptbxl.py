"""PTB-XL in its release layout (`ptbxl:PATH?fs=500|100&labels=superclass|subclass|TASK`).

PATH holds ptbxl_database.csv, scp_statements.csv and records100/ + records500/
(WFDB format 16, mV). Rows keep the database's order (ascending ecg_id);
record_id = ecg_id, patient_id = the patient column without its ".0", fold =
strat_fold (use the common `folds=` option to select some).

Labels (multi-hot over every key of scp_codes, whatever its likelihood, which is
how the PTB-XL benchmark aggregates them):
  superclass  diagnostic_class of the codes whose statement has diagnostic == 1,
              in the conventional order NORM, MI, STTC, CD, HYP.
  subclass    diagnostic_subclass of the same codes, sorted alphabetically.

The PTB-XL benchmark's six tasks (Strodthoff et al. 2020; the uniform foundation-model
benchmark uses the same), TASK:
  all             every statement code (71 on the full release).
  diagnostic      the codes whose statement has diagnostic == 1 (44).
  subdiagnostic   their diagnostic_subclass (23).
  superdiagnostic their diagnostic_class (5, NORM, MI, STTC, CD, HYP).
  form            the codes with form == 1 (19).
  rhythm          the codes with rhythm == 1 (12).
For these six the source leaves out the records with no label of the task, as the benchmark
does (a record with only rhythm statements is not a superdiagnostic example); `superclass`
(the default) and `subclass` keep every record, a record without a diagnostic code being all
zeros. label_names come from scp_statements.csv, not from the records present, so a subset
of PTB-XL has the same label columns as the full release.
"""

from __future__ import annotations

import ast
import csv
import os
from typing import Any

from absl import logging
import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data import wfdb_io

SUPERCLASSES: tuple[str, ...] = ("NORM", "MI", "STTC", "CD", "HYP")
# The benchmark's tasks (records without a label of the task are left out) ...
TASKS = ("all", "diagnostic", "subdiagnostic", "superdiagnostic", "form", "rhythm")
# ... and the label sets that keep every record.
LABEL_SETS = ("superclass", "subclass") + TASKS
_DATABASE = "ptbxl_database.csv"
_STATEMENTS = "scp_statements.csv"


def _parse_fs(text: str) -> int:
  fs = int(float(text))
  if fs not in (100, 500):
    raise ValueError(f"PTB-XL ships 100 and 500 Hz records, got {text!r}")
  return fs


def _parse_label_set(text: str) -> str:
  value = text.strip().lower()
  if value not in LABEL_SETS:
    raise ValueError(f"expected one of {', '.join(LABEL_SETS)}, got {text!r}")
  return value


def _read_csv(path: str) -> list[dict[str, str]]:
  if not os.path.isfile(path):
    raise ValueError(f"ptbxl: missing index file {path}")
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.DictReader(f))


def _statement_maps(rows: list[dict[str, str]], path: str) -> dict[str, dict[str, str]]:
  """Code -> {"class", "subclass", "diagnostic"} from scp_statements.csv."""
  if not rows:
    raise ValueError(f"ptbxl: {path} has no statements")
  code_col = next(iter(rows[0]))  # The first (unnamed) column holds the codes.
  out = {}
  for r in rows:
    flags = {}
    for column in ("diagnostic", "form", "rhythm"):
      try:
        flags[column] = float(r.get(column) or 0) == 1.0
      except ValueError:
        raise ValueError(f"ptbxl: {path}: bad {column} value in {r}") from None
    out[r[code_col].strip()] = {
        **flags,
        "class": (r.get("diagnostic_class") or "").strip(),
        "subclass": (r.get("diagnostic_subclass") or "").strip(),
    }
  return out


# label set -> (the statement flag a code needs, the statement field naming its label);
# None: every code, by its own name.
_LABEL_OF = {"all": (None, None), "diagnostic": ("diagnostic", None),
             "form": ("form", None), "rhythm": ("rhythm", None),
             "superclass": ("diagnostic", "class"), "superdiagnostic": ("diagnostic", "class"),
             "subclass": ("diagnostic", "subclass"), "subdiagnostic": ("diagnostic", "subclass")}


def _label_of(code: str, statement: dict[str, Any], label_set: str) -> str | None:
  """The label a code gives under `label_set`, or None."""
  flag, field = _LABEL_OF[label_set]
  if flag is not None and not statement[flag]:
    return None
  return code if field is None else (statement[field] or None)


def _label_names(statements: dict[str, dict[str, Any]], label_set: str) -> tuple[str, ...]:
  found = {name for code, st in statements.items()
           if (name := _label_of(code, st, label_set)) is not None}
  if label_set in ("superclass", "superdiagnostic"):
    # Always the five, so label columns never depend on which statements ship.
    return SUPERCLASSES + tuple(sorted(found - set(SUPERCLASSES)))
  return tuple(sorted(found))


def _codes_to_labels(codes: dict[str, Any], statements: dict[str, dict[str, Any]],
                     label_set: str, index: dict[str, int]) -> tuple[np.ndarray, int]:
  """Multi-hot vector for one record's scp_codes; also the count of unknown codes."""
  y = np.zeros(len(index), np.float32)
  unknown = 0
  for code in codes:
    st = statements.get(code)
    if st is None:
      unknown += 1
      continue
    name = _label_of(code, st, label_set)
    if name in index:
      y[index[name]] = 1.0
  return y, unknown


class PtbxlSource(sources.Source):
  """PTB-XL records at 100 or 500 Hz with SCP-derived multi-hot labels."""

  def __init__(self, root: str, fs: int = 500, label_set: str = "superclass",
               spec: specs.DataSpec | None = None):
    self.root = os.fspath(root)
    if not os.path.isdir(self.root):
      raise ValueError(f"ptbxl: no such directory {self.root}")
    self.spec = spec
    self.fs = float(fs)
    self.leads = leads_lib.LEADS_12
    db_path = os.path.join(self.root, _DATABASE)
    st_path = os.path.join(self.root, _STATEMENTS)
    rows = _read_csv(db_path)
    statements = _statement_maps(_read_csv(st_path), st_path)
    self.label_names = _label_names(statements, label_set)
    index = {name: i for i, name in enumerate(self.label_names)}
    file_col = "filename_hr" if fs == 500 else "filename_lr"
    missing = [c for c in ("ecg_id", "patient_id", "scp_codes", "strat_fold", file_col)
               if rows and c not in rows[0]]
    if missing:
      raise ValueError(f"ptbxl: {db_path} lacks column(s) {', '.join(missing)}")
    n = len(rows)
    self._record_id = np.empty(n, dtype=object)
    self._patient_id = np.empty(n, dtype=object)
    self._fold = np.zeros(n, np.int64)
    self._labels = np.zeros((n, len(self.label_names)), np.float32)
    self._files: list[str] = []
    unknown = 0
    for i, r in enumerate(rows):
      rid = sources.id_text(r["ecg_id"])
      try:
        codes = ast.literal_eval(r["scp_codes"] or "{}")
        if not isinstance(codes, dict):
          raise ValueError("not a dict")
        self._fold[i] = int(float(r["strat_fold"]))
      except (ValueError, SyntaxError) as e:
        raise ValueError(
            f"ptbxl: {db_path}, ecg_id {rid}: bad scp_codes or strat_fold: {e}") from None
      self._labels[i], k = _codes_to_labels(codes, statements, label_set, index)
      unknown += k
      self._record_id[i] = rid
      self._patient_id[i] = sources.id_text(r["patient_id"]) or rid
      self._files.append(r[file_col].strip())
    if unknown:
      logging.warning("ptbxl: %d scp_codes entries in %s are not in %s; ignored",
                      unknown, db_path, st_path)
    self._record_id = self._record_id.astype(str)
    self._patient_id = self._patient_id.astype(str)
    self.task = label_set if label_set in TASKS else None
    if self.task:  # the benchmark's task: only records with a label of it
      keep = self._labels.any(1)
      self._record_id, self._patient_id = self._record_id[keep], self._patient_id[keep]
      self._fold, self._labels = self._fold[keep], self._labels[keep]
      self._files = [f for f, k in zip(self._files, keep) if k]

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int) -> sources.Record:
    i = self._check_index(index)
    rid = self._record_id[i]
    hea = os.path.join(self.root, self._files[i] + ".hea")
    try:
      header = wfdb_io.read_header(hea)
      if header.fs != self.fs:
        raise wfdb_io.WfdbError(f"{hea}: sampling rate {header.fs}, expected {self.fs:g}")
      signal = wfdb_io.read_signals(header)
      signal, mask = wfdb_io.to_leads(signal, header.lead_names, self.leads, hea)
    except wfdb_io.WfdbError as e:
      raise sources.BadRecordError(rid, str(e)) from None
    return sources.make_record(
        signal, self.fs, self.leads, rid, self._patient_id[i], self._labels[i],
        int(self._fold[i]), lead_mask=mask)

  def metadata(self) -> dict[str, np.ndarray]:
    return {
        "record_id": self._record_id.copy(),
        "patient_id": self._patient_id.copy(),
        "fold": self._fold.copy(),
        "labels": self._labels.copy(),
    }


def detect(path: str) -> bool:
  """A directory holding ptbxl_database.csv."""
  return os.path.isfile(os.path.join(path, _DATABASE))


@specs.register_format(
    "ptbxl",
    options={
        "fs": specs.Option(_parse_fs, 500, "100 or 500: records100/ or records500/"),
        "labels": specs.Option(
            _parse_label_set, "superclass",
            "superclass (NORM,MI,STTC,CD,HYP) | subclass, every record; or a benchmark "
            "task, records with a label of it: all | diagnostic | subdiagnostic | "
            "superdiagnostic | form | rhythm"),
    },
    help="PTB-XL release directory (ptbxl_database.csv + WFDB records)",
    detect=detect)
def _open_ptbxl(spec: specs.DataSpec, *, fs: int, labels: str) -> sources.Source:
  return PtbxlSource(spec.path, fs, labels, spec)
