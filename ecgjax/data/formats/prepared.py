"""`prepared:DIR`: records already put through `Preprocessing.prepare`, for large-scale pretraining.

Layout of DIR (written by `ecgjax.data.prepare`, atomically):

  meta.json         format tag and version, the Preprocessing dict applied, the
                    source spec, counts, label names, sample dtype, shard list,
                    and every bad record skipped with its reason
  index.npy         one structured row per record: record_id, patient_id,
                    fold, source_index, shard, start, length, lead_mask (u1),
                    derived_mask (u1: leads the reader computed from others)
  labels.npy        float32 (N, n_labels), multi-hot (absent when unlabelled)
  shard-00000.npy   a flat 1-D sample array (float16 by default); record i of
  shard-00001.npy   the shard is the C-order (leads, length) block at element
  ...               start * n_leads, so records of any length pack without padding

Printouts prepared under an image contract use the same directory layout with fitted uint8
pictures (`prepared_image.py`); `prepared:DIR` opens either, by the contract in meta.json.

Why this layout: a record is one contiguous slice of a memory-mapped .npy file,
located by one row of a memory-mapped index, so reading record i is O(1) and
touches no other record, and the OS page cache (not each worker's heap) holds
what is hot, shared by every grain worker. Shards keep files to a few hundred MB,
are written in parallel by independent processes and can be copied or checked
one by one; plain .npy keeps everything readable with NumPy alone (ArrayRecord
would add a serialisation step per record and cannot be memory-mapped). Signals
are stored after the offline steps (lead order, resampling, filters) at full
length: random crops, augmentation and standardisation stay online. Records
carry the contract they were prepared with; `prepare_record` (used by the
training and eval pipelines) skips the offline steps for them and refuses,
naming the keys, a contract that would need different ones.

Sample dtype: float16 by default. Prepared signals are in mV; float16 keeps 11
significant bits, so rounding moves a sample by at most 0.25 uV below 1 mV,
1 uV below 4 mV and 2 uV below 8 mV: the size of the 1 uV step of clinical
converters (PTB-XL's own resolution), far under the 10-30 uV noise floor of a
recording. Measured on PTB-XL after ST-MEM filtering: at most 1.1 uV, i.e.
0.005 in z-scored units. It halves disk and page-cache traffic against float32,
which bounds throughput once a corpus outgrows RAM (10 M records of 12 x 2500
samples: 600 GB instead of 1.2 TB). Values beyond float16's range (65504: a
source in uV or raw ADC counts, not mV) make a record bad at prepare time, with
a hint to use dtype float32, which is exact.
"""

from __future__ import annotations

from collections.abc import Mapping
import json
import os
from typing import Any

import numpy as np

from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs
from ecgjax.data import transforms
from ecgjax.data.formats import sharded
from ecgjax import errors

FORMAT_TAG = "ecgjax-prepared"
FORMAT_VERSION = 1
# The directory's file names (shared with the image kind, formats/sharded.py).
META_FILE, INDEX_FILE, LABELS_FILE = sharded.META_FILE, sharded.INDEX_FILE, sharded.LABELS_FILE
DTYPES = ("float16", "float32")
# Contract fields applied online (after the crop): prepared data may differ in these, unless
# the contract standardises the whole record (standardize_scope "record"), which is offline.
ONLINE_KEYS = ("samples", "views")
WINDOW_STANDARDIZE_KEYS = ("standardize", "standardize_eps")


class PreparedMismatchError(errors.ContractMismatchError):
  """Prepared data were made with another contract than the one asked for."""


def shard_name(number: int) -> str:
  """File name of shard `number`."""
  return f"shard-{number:05d}.npy"


def index_dtype(n_leads: int, id_chars: int, patient_chars: int) -> np.dtype:
  """Structured dtype of index.npy rows."""
  return np.dtype([
      ("record_id", f"U{max(id_chars, 1)}"),
      ("patient_id", f"U{max(patient_chars, 1)}"),
      ("fold", "i8"),
      ("source_index", "i8"),  # Position in the source it was prepared from.
      ("shard", "i4"),  # Position in meta["shards"].
      ("start", "i8"),  # In samples per lead: element offset = start * n_leads.
      ("length", "i8"),  # Samples per lead.
      ("lead_mask", "u1", (n_leads,)),
      # 1 where the source derived the lead (an 8-lead export's III, aVR, aVL, aVF);
      # directories prepared before this column existed read as all 0.
      ("derived_mask", "u1", (n_leads,)),
  ])


def read_meta(path: str) -> dict[str, Any]:
  """meta.json of prepared directory `path`; errors say what is wrong."""
  meta_path = os.path.join(path, META_FILE)
  if not os.path.isdir(path):
    raise FileNotFoundError(f"prepared: no such directory {path}")
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(
        f"prepared: {path} has no {META_FILE}; make one with "
        "`python -m ecgjax.data prepare SPEC OUT`")
  try:
    with open(meta_path) as f:
      meta = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    # Without meta.json neither the records nor the contract they were prepared with are
    # known, so nothing can be skipped around it: the whole directory is unreadable.
    raise ValueError(f"prepared: {meta_path} is corrupt ({e}); the directory cannot be read "
                     "without it: prepare the data again") from None
  except OSError as e:
    raise ValueError(f"prepared: cannot read {meta_path}: {e}") from None
  if not isinstance(meta, dict):
    raise ValueError(f"prepared: {meta_path} is corrupt (not a JSON object)")
  missing = [k for k in ("format", "format_version", "preprocessing", "label_names", "dtype",
                         "counts", "shards") if k not in meta]
  if meta.get("format") == FORMAT_TAG and missing:
    raise ValueError(f"prepared: {meta_path} is corrupt: it lacks {', '.join(missing)}; "
                     "prepare the data again")
  if meta.get("format") != FORMAT_TAG:
    raise ValueError(f"{meta_path} is not ecgjax prepared data "
                     f"(format {meta.get('format')!r})")
  if meta.get("format_version") != FORMAT_VERSION:
    raise ValueError(
        f"{path}: prepared format version {meta.get('format_version')}, this "
        f"ecgjax reads version {FORMAT_VERSION}; prepare the data again")
  return meta


def is_prepared_dir(path: str) -> bool:
  """Cheap check (first bytes of meta.json) for `auto:` detection."""
  try:
    with open(os.path.join(path, META_FILE)) as f:
      head = f.read(200)
  except OSError:
    return False
  return f'"{FORMAT_TAG}"' in head


def prepared_mismatch(prepared: Mapping[str, Any],
                      preprocessing: transforms.Preprocessing) -> list[str]:
  """Contract keys in which `preprocessing` differs from what `prepared` applied.

  samples and views never differ (they run online), nor does a window-scope
  standardize; leads differ only
  when the contract asks for a lead the prepared data do not hold (a subset or
  another order is a free reorder, as every offline step works lead by lead).
  """
  done = transforms.Preprocessing.from_dict(prepared).to_dict()
  want = preprocessing.to_dict()
  online = ONLINE_KEYS + ("leads",)
  if want["standardize_scope"] == done["standardize_scope"] == "window":
    online += WINDOW_STANDARDIZE_KEYS
  diff = [k for k in want if k not in online and done.get(k) != want[k]]
  if not set(want["leads"]) <= set(done["leads"]):
    diff.append("leads")
  return sorted(diff)


# id(marker dict) -> (marker, mismatching keys): the check runs once per source
# object, not once per record. The marker is kept so its id is not reused.
_CHECKED: dict[tuple[int, transforms.Preprocessing], tuple[Any, list[str]]] = {}


def prepare_record(preprocessing: transforms.Preprocessing,
                   record: sources.Record) -> tuple[np.ndarray, np.ndarray]:
  """`preprocessing.prepare(record)`, or the stored signal of an already prepared record.

  Raises PreparedMismatchError (naming the keys) when the record was prepared
  under a different contract: re-filtering it would silently double-filter.
  """
  done = record.get("prepared")
  if done is None:
    return preprocessing.prepare(record)
  key = (id(done), preprocessing)
  if key not in _CHECKED:
    if len(_CHECKED) > 256:  # A source making a new marker per record.
      _CHECKED.clear()
    _CHECKED[key] = (done, prepared_mismatch(done, preprocessing))
  diff = _CHECKED[key][1]
  if diff:
    ours = preprocessing.to_dict()
    detail = ", ".join(f"{k}: prepared {done.get(k)!r} vs {ours[k]!r}" for k in diff)
    raise PreparedMismatchError(
        f"record {record.get('record_id')!r} was prepared with another input "
        f"contract ({detail}); prepare the data again with this contract or "
        "train on the original source")
  x = np.asarray(record["signal"], np.float32)
  n = x.shape[0]
  mask = np.asarray(record.get("lead_mask", np.ones(n, np.float32)), np.float32)
  names = tuple(record["leads"])
  if names != preprocessing.leads:
    x, _ = leads_lib.reorder(x, names, preprocessing.leads)
    mask = leads_lib.reorder_flags(mask, names, preprocessing.leads)
  return x, mask


class PreparedSource(sharded.ShardedSource):
  """Records of a prepared directory (see the module docstring); opens files lazily.

  Each record carries "prepared": the Preprocessing dict it went through, so the
  pipelines skip those steps (see `prepare_record`).
  """

  def __init__(self, path: str, spec: specs.DataSpec | None = None):
    self._init_files(path, read_meta(os.fspath(path)), spec)
    self.preprocessing = transforms.Preprocessing.from_dict(self.meta["preprocessing"])
    # One shared object: prepare_record checks the contract once per source.
    self.prepared = self.preprocessing.to_dict()
    self.fs = self.preprocessing.fs
    self.leads = self.preprocessing.leads
    self.dtype = np.dtype(self.meta["dtype"])

  def signal(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    """(stored samples (leads, length) in the file's dtype, lead_mask float32); BadRecordError
    naming the shard when it is missing or truncated."""
    row = self._rows()[self._check_index(index)]
    n_leads, length = len(self.leads), int(row["length"])
    flat = self._slice(row, int(row["start"]) * n_leads, n_leads * length, "samples")
    return flat.reshape(n_leads, length), row["lead_mask"].astype(np.float32)

  def __getitem__(self, index: int) -> sources.Record:
    index = self._check_index(index)
    row = self._rows()[index]
    x, mask = self.signal(index)
    derived = (row["derived_mask"] if "derived_mask" in row.dtype.names
               else np.zeros(len(self.leads), np.uint8))
    rec = sources.make_record(
        x, self.fs, self.leads, str(row["record_id"]), str(row["patient_id"]),
        self._label_rows()[index], int(row["fold"]), lead_mask=mask, derived_mask=derived)
    rec["prepared"] = self.prepared
    return rec


@specs.register_format(
    "prepared", options={},
    help="a directory made by `python -m ecgjax.data prepare` (sharded, "
         "memory-mapped, already preprocessed)",
    detect=is_prepared_dir)
def _open_prepared(spec: specs.DataSpec) -> sources.Source:
  from ecgjax.data.formats import prepared_image  # pylint: disable=g-import-not-at-top
  meta = read_meta(spec.path)
  if prepared_image.is_image_meta(meta):  # printouts, prepared under an image contract
    return prepared_image.PreparedImageSource(spec.path, meta, spec)
  return PreparedSource(spec.path, spec)
