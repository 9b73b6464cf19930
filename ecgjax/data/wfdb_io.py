"""WFDB records in pure NumPy: header parsing and signal decoding (shared by readers).

Written from the WFDB header(5) and signal(5) format descriptions. Supported:
single-segment records whose signals live in `.dat` files of formats 16, 61, 80,
160, 212, 24 and 32, or in a MATLAB `.mat` file holding `val` (leads x samples),
as the PhysioNet/CinC 2020-2021 challenges ship them. Digital samples become
physical ones as (d - baseline) / gain, scaled to millivolts from mV, uV or V.

Every problem raises `WfdbError` whose message names the file and what is wrong;
readers turn it into `BadRecordError` for their record id.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses
import os
import re

import numpy as np
import scipy.io

from ecgjax import leads as leads_lib
from ecgjax.errors import UserError

# WFDB's gain when a header gives none or 0 ("uncalibrated"): ADC units per mV.
DEFAULT_GAIN = 200.0
# Bytes per sample of each supported .dat format (212 packs 2 samples in 3 bytes).
_BYTES_PER_SAMPLE = {8: 1.0, 16: 2.0, 24: 3.0, 32: 4.0, 61: 2.0, 80: 1.0,
                     160: 2.0, 212: 1.5}
# Format 8 stores first differences, so a record cannot be read from the middle;
# ECG data sets do not use it, so it is named but refused.
SUPPORTED_FORMATS = (16, 24, 32, 61, 80, 160, 212)
# The most negative value of each format marks an invalid (missing) sample.
_INVALID = {16: -(2**15), 61: -(2**15), 160: -(2**15), 80: -(2**7),
            212: -(2**11), 24: -(2**23), 32: -(2**31)}
# Multipliers from a signal's units to millivolts (case-insensitive keys).
_TO_MV = {"mv": 1.0, "uv": 1e-3, "\u00b5v": 1e-3, "\u03bcv": 1e-3, "v": 1e3,
          "nv": 1e-6}

# Channels of mixed recordings (MIMIC, PhysioNet/CinC) that are known not to be ECG leads:
# blood pressures, plethysmography, respiration, gases, other biosignals, vector/Frank leads.
# They are left out of the record by name; any other non-lead name is also left out, with a
# warning, since it may be an ECG lead under a spelling ecgjax does not know.
_NON_LEAD_RE = re.compile(
    r"^(abp|art|ap|bp|nbp|nibp|sbp|dbp|mbp|pap|cvp|icp|lap|rap|uap|pawp|pleth|ppg|spo2|sao2|"
    r"resp|rr|co2|etco2|o2|flow|airflow|thor|abdo|abd|chest|pulse|hr|temp|t|eeg.*|emg.*|"
    r"eog.*|edr|ecg[\s_-]*(x|y|z)|vx|vy|vz|x|y|z|stim|event|marker|annotation|sync)$",
    re.IGNORECASE)


def classify_channels(names: Sequence[str]) -> tuple[list[int], list[str], list[str]]:
  """(indices of the ECG-lead channels, known non-lead names, unrecognised names)."""
  leads, known, unknown = [], [], []
  for i, name in enumerate(names):
    try:
      leads_lib.canonical_lead(name)
      leads.append(i)
    except ValueError:
      (known if _NON_LEAD_RE.match(name.strip()) else unknown).append(name)
  return leads, known, unknown


_FMT_RE = re.compile(r"^(\d+)(?:x(\d+))?(?::(-?\d+))?(?:\+(\d+))?$")
_GAIN_RE = re.compile(r"^([-+]?[\d.]+(?:[eE][-+]?\d+)?)(?:\((-?\d+)\))?(?:/(\S+))?$")
_FS_RE = re.compile(r"^([\d.]+(?:[eE][-+]?\d+)?)(?:/.*)?$")
_INFO_RE = re.compile(r"^\s*([A-Za-z][\w \-]*?)\s*:\s*(.*?)\s*$")


class WfdbError(UserError, ValueError):
  """A WFDB header or signal file that cannot be read; the message names the file."""


@dataclasses.dataclass(frozen=True)
class SignalInfo:
  """One signal line of a header: where the samples are and how to scale them."""

  file_name: str
  fmt: int
  samples_per_frame: int = 1
  skew: int = 0
  byte_offset: int = 0
  gain: float = DEFAULT_GAIN  # ADC units per physical unit.
  baseline: int = 0  # Digital value of physical zero.
  units: str = "mV"
  adc_res: int = 0
  adc_zero: int = 0
  init_value: int | None = None
  checksum: int | None = None
  description: str = ""


@dataclasses.dataclass(frozen=True)
class Header:
  """A parsed `.hea` file: record line, signal lines, comment lines."""

  path: str
  record_name: str
  n_sig: int
  fs: float | None  # None when the header omits it (never guessed here).
  n_samples: int | None  # None when omitted: the signal file's size decides.
  signals: tuple[SignalInfo, ...]
  comments: tuple[str, ...] = ()

  @property
  def lead_names(self) -> tuple[str, ...]:
    """Each signal's description (its lead name in ECG data sets)."""
    return tuple(s.description for s in self.signals)

  def info(self) -> dict[str, str]:
    """`# Key: value` comments as a dict with lower-case keys ("age": "74")."""
    out = {}
    for line in self.comments:
      m = _INFO_RE.match(line)
      if m:
        out.setdefault(m.group(1).strip().lower(), m.group(2))
    return out


def _int(tok: str, what: str, where: str) -> int:
  try:
    return int(tok)
  except ValueError:
    raise WfdbError(f"{where}: bad {what} {tok!r}") from None


def _parse_signal_line(line: str, where: str) -> SignalInfo:
  tok = line.split()
  if len(tok) < 2:
    raise WfdbError(f"{where}: signal line {line!r} has no format field")
  m = _FMT_RE.match(tok[1])
  if not m:
    raise WfdbError(f"{where}: bad format field {tok[1]!r} in {line!r}")
  fmt = int(m.group(1))
  spf = int(m.group(2) or 1)
  skew = int(m.group(3) or 0)
  offset = int(m.group(4) or 0)
  gain, baseline, units = DEFAULT_GAIN, None, "mV"
  if len(tok) > 2:
    g = _GAIN_RE.match(tok[2])
    if not g:
      raise WfdbError(f"{where}: bad gain field {tok[2]!r} in {line!r}")
    # A gain of 0 means "uncalibrated" in WFDB; the library then assumes 200.
    gain = float(g.group(1)) or DEFAULT_GAIN
    baseline = int(g.group(2)) if g.group(2) is not None else None
    units = g.group(3) or "mV"
  adc_res = _int(tok[3], "ADC resolution", where) if len(tok) > 3 else 0
  adc_zero = _int(tok[4], "ADC zero", where) if len(tok) > 4 else 0
  init_value = _int(tok[5], "initial value", where) if len(tok) > 5 else None
  checksum = _int(tok[6], "checksum", where) if len(tok) > 6 else None
  # tok[7] is the block size (only for special files); the rest is the description.
  description = " ".join(tok[8:])
  return SignalInfo(
      file_name=tok[0], fmt=fmt, samples_per_frame=spf, skew=skew,
      byte_offset=offset, gain=gain,
      baseline=adc_zero if baseline is None else baseline, units=units,
      adc_res=adc_res, adc_zero=adc_zero, init_value=init_value,
      checksum=checksum, description=description)


def parse_header(text: str, path: str = "<header>") -> Header:
  """Parses the text of a `.hea` file; `path` is only used in messages."""
  comments, lines = [], []
  for raw in text.splitlines():
    s = raw.strip()
    if s.startswith("#"):
      comments.append(s[1:].strip())
    elif s:
      lines.append(s)
  if not lines:
    raise WfdbError(f"{path}: unparseable header: no record line")
  tok = lines[0].split()
  if len(tok) < 2:
    raise WfdbError(
        f"{path}: unparseable header: record line {lines[0]!r} has no signal count")
  name = tok[0]
  if "/" in name:
    raise WfdbError(f"{path}: multi-segment records ({name}) are not supported")
  n_sig = _int(tok[1], "signal count", path)
  fs = None
  if len(tok) > 2:
    m = _FS_RE.match(tok[2])
    fs = float(m.group(1)) if m else None
    if fs is None or not fs > 0 or not np.isfinite(fs):
      raise WfdbError(f"{path}: bad sampling rate {tok[2]!r}")
  n_samples = _int(tok[3], "sample count", path) if len(tok) > 3 else None
  if n_samples is not None and n_samples < 0:
    raise WfdbError(f"{path}: negative sample count {n_samples}")
  if n_sig < 0 or len(lines) - 1 < n_sig:
    raise WfdbError(
        f"{path}: unparseable header: the record line says {n_sig} signals but "
        f"{len(lines) - 1} signal lines follow")
  signals = tuple(_parse_signal_line(s, path) for s in lines[1:1 + n_sig])
  return Header(path=path, record_name=name, n_sig=n_sig, fs=fs,
                n_samples=n_samples, signals=signals, comments=tuple(comments))


def read_header(path: str) -> Header:
  """Reads and parses a `.hea` file."""
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      text = f.read()
  except FileNotFoundError:
    raise WfdbError(f"missing header file {path}") from None
  except OSError as e:
    raise WfdbError(f"{path}: cannot read header: {e}") from None
  return parse_header(text, path)


def _needed_bytes(fmt: int, n_values: int) -> int:
  if fmt == 212:
    # An odd final sample is stored in 2 bytes (no partner in the triplet).
    return 3 * (n_values // 2) + 2 * (n_values % 2)
  return int(_BYTES_PER_SAMPLE[fmt]) * n_values


def decode(raw: bytes, fmt: int, n_values: int) -> np.ndarray:
  """Decodes `n_values` interleaved samples of a .dat format (signed ints)."""
  if fmt == 16:
    return np.frombuffer(raw, "<i2", n_values)
  if fmt == 61:
    return np.frombuffer(raw, ">i2", n_values).astype(np.int16)
  if fmt == 80:
    return np.frombuffer(raw, np.uint8, n_values).astype(np.int16) - np.int16(128)
  if fmt == 160:
    return np.frombuffer(raw, "<u2", n_values).astype(np.int32) - 32768
  if fmt == 32:
    return np.frombuffer(raw, "<i4", n_values)
  if fmt == 24:
    b = np.frombuffer(raw, np.uint8, 3 * n_values).reshape(-1, 3).astype(np.int32)
    v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return np.where(v >= 2**23, v - 2**24, v)
  if fmt == 212:
    b = np.frombuffer(raw, np.uint8, _needed_bytes(212, n_values))
    b = np.concatenate([b, np.zeros((-len(b)) % 3, np.uint8)]).reshape(-1, 3)
    b = b.astype(np.int16)
    # Byte 1 holds the high nibbles: low nibble for sample 0, high for sample 1.
    pair = np.stack([b[:, 0] | ((b[:, 1] & 0x0F) << 8),
                     b[:, 2] | ((b[:, 1] & 0xF0) << 4)], axis=1).reshape(-1)
    pair = pair[:n_values]
    return np.where(pair >= 2048, pair - 4096, pair).astype(np.int16)
  raise WfdbError(f"unsupported WFDB format {fmt}")


def _read_dat(path: str, sigs: Sequence[SignalInfo], n: int | None,
              where: str) -> np.ndarray:
  """Digital samples (len(sigs), n) of one .dat file holding interleaved frames."""
  fmt, offset, k = sigs[0].fmt, sigs[0].byte_offset, len(sigs)
  if fmt not in SUPPORTED_FORMATS:
    raise WfdbError(
        f"{where}: {os.path.basename(path)} uses WFDB format {fmt}, which is not "
        f"supported (supported: {', '.join(map(str, SUPPORTED_FORMATS))})")
  if any(s.fmt != fmt or s.byte_offset != offset for s in sigs):
    raise WfdbError(f"{where}: signals in {path} disagree on format or byte offset")
  try:
    size = os.path.getsize(path) - offset
  except FileNotFoundError:
    raise WfdbError(f"{where}: missing signal file {path}") from None
  if n is None:
    # The header may omit the length; WFDB then reads to the end of the file.
    n = int(max(size, 0) // (_BYTES_PER_SAMPLE[fmt] * k))
  need = _needed_bytes(fmt, n * k)
  if size < need:
    raise WfdbError(
        f"{where}: truncated signal file {path}: {max(size, 0)} bytes after offset "
        f"{offset}, but {k} signals x {n} samples in format {fmt} need {need} "
        "(or the header's signal count or length is wrong)")
  with open(path, "rb") as f:
    f.seek(offset)
    raw = f.read(need)
  return decode(raw, fmt, n * k).reshape(n, k).T


def _read_mat(path: str, k: int, n: int | None, where: str) -> np.ndarray:
  """The `val` matrix (k, n) of a challenge-style .mat file (int or float)."""
  if not os.path.isfile(path):
    raise WfdbError(f"{where}: missing signal file {path}")
  try:
    val = scipy.io.loadmat(path, variable_names=["val"]).get("val")
  except Exception as e:  # scipy raises many types for corrupt files.
    raise WfdbError(f"{path}: cannot read as a MATLAB file: {e}") from None
  if val is None:
    raise WfdbError(f"{path}: no variable 'val' (expected leads x samples)")
  val = np.asarray(val)
  if val.ndim != 2 or val.shape[0] != k:
    raise WfdbError(
        f"{where}: the header lists {k} signals in {os.path.basename(path)} but "
        f"its 'val' has shape {val.shape} (expected ({k}, samples))")
  if n is not None and val.shape[1] < n:
    raise WfdbError(
        f"{where}: truncated signal file {path}: {val.shape[1]} samples, header "
        f"says {n}")
  return val if n is None else val[:, :n]


def read_signals(header: Header, check_checksum: bool = True,
                 rows: Sequence[int] | None = None) -> np.ndarray:
  """Physical samples (len(rows), n_samples) float32 in mV of the signals `rows` (default:
  all); raises WfdbError on any problem. Only those rows need voltage units and valid samples:
  an ABP or PLETH channel beside the leads does not spoil the record."""
  where = header.path
  if not header.signals:
    raise WfdbError(f"{where}: the header lists no signals")
  for s in header.signals:
    if s.samples_per_frame != 1 or s.skew != 0:
      raise WfdbError(
          f"{where}: signal {s.description or s.file_name!r} uses multiple samples "
          "per frame or skew, which is not supported")
  groups: dict[str, list[int]] = {}
  for i, s in enumerate(header.signals):
    groups.setdefault(s.file_name, []).append(i)
  base = os.path.dirname(header.path)
  n = header.n_samples
  blocks = []
  for file_name, idx in groups.items():
    path = os.path.join(base, file_name)
    sigs = [header.signals[i] for i in idx]
    if file_name.lower().endswith(".mat"):
      block = _read_mat(path, len(idx), n, where)
    else:
      block = _read_dat(path, sigs, n, where)
    if n is None:
      n = block.shape[1]
    elif block.shape[1] != n:
      raise WfdbError(f"{where}: {path} holds {block.shape[1]} samples, others {n}")
    blocks.append((idx, block))
  if not n:
    raise WfdbError(f"{where}: zero-length record (0 samples)")
  if len(blocks) == 1 and blocks[0][0] == list(range(header.n_sig)):
    digital = blocks[0][1]  # The usual case: one file, signals in header order.
  else:
    dtype = np.result_type(*(b.dtype for _, b in blocks))
    digital = np.empty((header.n_sig, n), dtype)
    for idx, block in blocks:
      digital[idx] = block
  rows = list(range(header.n_sig)) if rows is None else list(rows)
  if rows != list(range(header.n_sig)):
    digital = digital[rows]
  return _to_mv(header, digital, check_checksum, rows)


def _to_mv(header: Header, d: np.ndarray, check_checksum: bool,
           rows: Sequence[int]) -> np.ndarray:
  """Digital samples (len(rows), n) of signals `rows` to physical mV, validated at once."""
  where, sigs = header.path, [header.signals[i] for i in rows]
  names = [s.description or s.file_name for s in sigs]
  scale = np.empty(len(sigs))
  for i, s in enumerate(sigs):
    f = _TO_MV.get(s.units.lower())
    if f is None:
      raise WfdbError(
          f"{where}: signal {names[i]!r} is in units {s.units!r}, not a voltage "
          "(expected mV, uV or V)")
    scale[i] = f
  floating = np.issubdtype(d.dtype, np.floating)
  if floating:
    bad = ~np.isfinite(d)
    if bad.any():
      i = int(np.flatnonzero(bad.any(axis=1))[0])
      raise WfdbError(
          f"{where}: {int(bad.sum())} NaN or inf samples, first in signal "
          f"{names[i]!r} of {sigs[i].file_name}")
  else:
    # The missing-value code is each format's most negative value, so only rows
    # whose minimum reaches it need a full comparison.
    mins = d.min(axis=1)
    for i, s in enumerate(sigs):
      code = _INVALID.get(s.fmt)
      if code is not None and mins[i] <= code and np.any(d[i] == code):
        raise WfdbError(
            f"{where}: {int(np.sum(d[i] == code))} samples of signal {names[i]!r} in "
            f"{s.file_name} hold WFDB's missing-value code {code}")
    if check_checksum:
      # WFDB checksums are the 16-bit sum of the digital samples; a mismatch means
      # the bytes do not decode to what was written (corruption, wrong format).
      got = d.sum(axis=1, dtype=np.int64) & 0xFFFF
      for i, s in enumerate(sigs):
        if s.checksum is not None and got[i] != s.checksum & 0xFFFF:
          raise WfdbError(
              f"{where}: checksum mismatch for signal {names[i]!r} in "
              f"{s.file_name} (header {s.checksum}, data {got[i]}): corrupt or "
              "mis-described file")
  # Samples of <= 16 bits are exact in float32; wider ones go through float64.
  work = np.float32 if d.dtype.itemsize <= 2 and not floating else np.float64
  x = np.empty(d.shape, work)
  x[...] = d
  x -= np.array([s.baseline for s in sigs], work)[:, None]
  x /= np.array([s.gain for s in sigs], work)[:, None]
  if np.any(scale != 1.0):
    x *= scale.astype(work)[:, None]
  return x.astype(np.float32, copy=False)


def to_leads(signal: np.ndarray, names: Sequence[str], want: Sequence[str],
             where: str) -> tuple[np.ndarray, np.ndarray | None]:
  """Rows named by canonical leads in `want` order; (signal, mask or None if all present).

  Channels whose names are not ECG leads (respiration, "ECG", vector leads) are
  left out (`classify_channels` says which); absent leads become zeros with mask 0,
  never a shifted row.
  """
  keep, canon = [], []
  for i, name in enumerate(names):
    try:
      canon.append(leads_lib.canonical_lead(name))
      keep.append(i)
    except ValueError:
      continue
  if not keep:
    raise WfdbError(f"{where}: no standard ECG lead names among channels {list(names)}")
  dupes = sorted({c for c in canon if canon.count(c) > 1})
  if dupes:
    raise WfdbError(f"{where}: lead {', '.join(dupes)} appears twice in {list(names)}")
  out, mask = leads_lib.reorder(signal[keep], canon, want)
  return out, (None if mask.all() else mask)
