"""Writers of small on-disk fixtures for the format readers' tests (WFDB, PTB-XL, CPSC, CODE-15).

The encoders here are written independently of the readers' decoders from the
WFDB signal(5) layout; the tests also pin format 212 to hand-computed bytes and
format 16 to the real PTB-XL files, so a symmetric mistake cannot hide.
"""

from __future__ import annotations

from collections.abc import Sequence
import os
import re

import numpy as np
import scipy.io

from ecgjax import leads as leads_lib


def encode(digital: np.ndarray, fmt: int) -> bytes:
  """Interleaved frames of a (signals, samples) int array in a WFDB .dat format."""
  flat = np.asarray(digital, np.int64).T.reshape(-1)
  if fmt == 16:
    return flat.astype("<i2").tobytes()
  if fmt == 61:
    return flat.astype(">i2").tobytes()
  if fmt == 80:
    return (flat + 128).astype(np.uint8).tobytes()
  if fmt == 160:
    return (flat + 32768).astype("<u2").tobytes()
  if fmt == 32:
    return flat.astype("<i4").tobytes()
  if fmt == 24:
    u = flat & 0xFFFFFF
    return np.stack([u & 0xFF, (u >> 8) & 0xFF, u >> 16], 1).astype(np.uint8).tobytes()
  if fmt == 212:
    out = bytearray()
    for j in range(0, len(flat), 2):
      a = int(flat[j]) & 0xFFF
      if j + 1 < len(flat):
        b = int(flat[j + 1]) & 0xFFF
        out += bytes([a & 0xFF, (a >> 8) | ((b >> 8) << 4), b & 0xFF])
      else:
        out += bytes([a & 0xFF, a >> 8])  # An odd last sample takes 2 bytes.
    return bytes(out)
  raise ValueError(f"no encoder for format {fmt}")


def write_wfdb(directory: str | os.PathLike, name: str, digital: np.ndarray, *,
               fs: float | None = 500, fmt: int | str = 16,
               gain: str = "200(0)/mV", adc_zero: int = 0,
               leads: Sequence[str] = leads_lib.LEADS_12,
               comments: Sequence[str] = (), ext: str = "dat",
               n_sig: int | None = None, n_samples: int | None = None,
               data: np.ndarray | None = None, checksum: bool = True) -> str:
  """Writes NAME.hea plus NAME.dat (or NAME.mat with `val`); returns the header path.

  n_sig / n_samples override what the header claims; `data` overrides what the
  signal file holds (to write headers that disagree with their data).
  """
  os.makedirs(directory, exist_ok=True)
  digital = np.asarray(digital)
  k, n = digital.shape
  n_sig = k if n_sig is None else n_sig
  n_samples = n if n_samples is None else n_samples
  stored = digital if data is None else np.asarray(data)
  file_name = f"{os.path.basename(name)}.{ext}"
  # Fields are positional: without a rate the length must go too.
  tail = "" if fs is None else f" {fs:g} {n_samples}"
  lines = [f"{os.path.basename(name)} {n_sig}{tail}"]
  for i in range(n_sig):
    row = digital[i % k]
    if np.issubdtype(row.dtype, np.integer):
      init, total = int(row[0]) if n else 0, int(row.astype(np.int64).sum()) & 0xFFFF
      if ext == "mat":
        total = (total + 32768) % 65536 - 32768  # The challenges wrote signed sums.
    else:
      init, total = 0, 0
    fields = f"{init} {total}" if checksum else f"{init} 0"
    fmt_field = f"{fmt}+24" if ext == "mat" and str(fmt).isdigit() else str(fmt)
    lines.append(f"{file_name} {fmt_field} {gain} 16 {adc_zero} {fields} 0 "
                 f"{leads[i % len(leads)]}")
  lines += [f"# {c}" for c in comments]
  hea = os.path.join(directory, f"{os.path.basename(name)}.hea")
  with open(hea, "w") as f:
    f.write("\n".join(lines) + "\n")
  path = os.path.join(directory, file_name)
  if ext == "mat":
    scipy.io.savemat(path, {"val": stored})
  else:
    with open(path, "wb") as f:
      code = int(re.match(r"\d+", str(fmt)).group())  # "16x2", "16:4", "212+24" -> the format
      # Formats with no encoder here (to test refusals) get format-16 bytes.
      f.write(encode(stored, code if code in (16, 24, 32, 61, 80, 160, 212) else 16))
  return hea


def random_digital(k: int = 12, n: int = 500, seed: int = 0,
                   lo: int = -2000, hi: int = 2000) -> np.ndarray:
  """Random int digital samples (k, n) within [lo, hi)."""
  return np.random.default_rng(seed).integers(lo, hi, size=(k, n)).astype(np.int64)


def write_ptbxl(root: str | os.PathLike, records: Sequence[dict], *,
                seconds: float = 0.2) -> str:
  """A tiny PTB-XL release: each record dict has ecg_id, patient_id, scp_codes, fold, and
  optionally `signal` (12, seconds * 100) mV at 100 Hz (upsampled x5 for the 500 Hz file).

  Records get 500 Hz (100 samples) and 100 Hz (20 samples) format-16 files (`seconds` sets
  the length) unless `skip_files` is set in the dict.
  """
  root = os.fspath(root)
  os.makedirs(root, exist_ok=True)
  statements = [
      ",description,diagnostic,form,rhythm,diagnostic_class,diagnostic_subclass",
      "NORM,normal ECG,1.0,,,NORM,NORM",
      "IMI,inferior MI,1.0,,,MI,IMI",
      "LVH,left ventricular hypertrophy,1.0,,,HYP,LVH",
      "SR,sinus rhythm,,,1.0,,",
      "LVOLT,low voltage,,1.0,,,",
  ]
  with open(os.path.join(root, "scp_statements.csv"), "w") as f:
    f.write("\n".join(statements) + "\n")
  rows = ["ecg_id,patient_id,age,scp_codes,strat_fold,filename_lr,filename_hr"]
  for r in records:
    eid = int(r["ecg_id"])
    lr = f"records100/00000/{eid:05d}_lr"
    hr = f"records500/00000/{eid:05d}_hr"
    codes = str(r["scp_codes"]).replace('"', '""')
    rows.append(f'{eid},{r["patient_id"]},50.0,"{codes}",{r["fold"]},{lr},{hr}')
    if not r.get("skip_files"):
      n100 = int(round(seconds * 100))
      for rel, fs, n in ((lr, 100, n100), (hr, 500, 5 * n100)):
        digital = random_digital(12, n, seed=eid)
        if r.get("signal") is not None:
          digital = np.round(1000.0 * np.repeat(np.asarray(r["signal"]), n // n100, axis=1))
          digital = digital.astype(np.int64)
        write_wfdb(os.path.join(root, os.path.dirname(rel)), os.path.basename(rel),
                   digital, fs=fs, gain="1000.0(0)/mV",
                   leads=("I", "II", "III", "AVR", "AVL", "AVF",
                          "V1", "V2", "V3", "V4", "V5", "V6"))
  with open(os.path.join(root, "ptbxl_database.csv"), "w") as f:
    f.write("\n".join(rows) + "\n")
  return root


def write_cpsc(directory: str | os.PathLike, name: str, data: np.ndarray,
               sex: str = "Male", age: int = 60) -> str:
  """A CPSC 2018 style .mat file: struct ECG with sex, age and data (leads x samples)."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{name}.mat")
  scipy.io.savemat(path, {"ECG": {"sex": sex, "age": age, "data": np.asarray(data)}})
  return path


def write_code15(directory: str | os.PathLike, parts: Sequence[tuple[np.ndarray, np.ndarray]],
                 exams: Sequence[dict] | None = None) -> list[str]:
  """exams_part{i}.hdf5 files of (tracings (N, samples, 12), exam_id (N,)), plus exams.csv."""
  import h5py  # pylint: disable=g-import-not-at-top
  os.makedirs(directory, exist_ok=True)
  paths = []
  for i, (tracings, exam_id) in enumerate(parts):
    path = os.path.join(directory, f"exams_part{i}.hdf5")
    with h5py.File(path, "w") as h:
      h.create_dataset("tracings", data=np.asarray(tracings, np.float32))
      h.create_dataset("exam_id", data=np.asarray(exam_id, np.int64))
    paths.append(path)
  if exams is not None:
    cols = ["exam_id", "age", "is_male", "nn_predicted_age", "1dAVb", "RBBB", "LBBB",
            "SB", "ST", "AF", "patient_id", "death", "timey", "normal_ecg", "trace_file"]
    lines = [",".join(cols)]
    for e in exams:
      row = {"age": 50, "is_male": "True", "nn_predicted_age": 51.5, "death": "",
             "timey": "", "normal_ecg": "False", "trace_file": "exams_part0.hdf5",
             **{c: "False" for c in ("1dAVb", "RBBB", "LBBB", "SB", "ST", "AF")}, **e}
      lines.append(",".join(str(row[c]) for c in cols))
    with open(os.path.join(directory, "exams.csv"), "w") as f:
      f.write("\n".join(lines) + "\n")
  return paths
