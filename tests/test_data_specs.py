"""Spec grammar, lead names, and sources (synthetic wrappers, npy files)."""

import pickle

import numpy as np
import pytest

from ecgjax import data
from ecgjax import leads as leads_lib
from ecgjax.data import sources
from ecgjax.data import specs


@pytest.mark.parametrize("text", [
    "synthetic:2000?seed=1&fs=250&seconds=10",
    "ptbxl:/data/ptbxl?fs=500&labels=superclass&folds=1-7",
    "npy:/data/x y.npy?fs=250&leads=I,II,V1",
    "npy:rel/path.npy",
    "/data/signals.npy?fs=250",
])
def test_spec_round_trip(text):
  spec = data.parse_spec(text)
  assert data.parse_spec(str(spec)) == spec
  assert data.parse_spec(spec) is spec


def test_spec_fields_and_percent_decoding():
  spec = data.parse_spec("npy:/d/a%20b%3Fc.npy?fs=2%35%30&leads=I%2CII")
  assert spec == data.DataSpec("npy", "/d/a b?c.npy", {"fs": "250", "leads": "I,II"})
  # Characters that are part of the grammar survive a round trip encoded.
  odd = data.DataSpec("npy", "/d/50%?.npy", {"note": "a&b=c"})
  assert data.parse_spec(str(odd)) == odd
  assert hash(odd) == hash(data.parse_spec(str(odd)))


def test_bare_path_is_auto():
  spec = data.parse_spec("/data/signals.npy?fs=250")
  assert spec.format == "auto" and spec.path == "/data/signals.npy"
  assert str(spec) == "/data/signals.npy?fs=250"
  # A Windows drive letter is a path, not a format.
  assert data.parse_spec(r"C:\data\x.npy").format == "auto"


@pytest.mark.parametrize("bad", ["", "synthetic:10?seed", "synthetic:10?seed=1&seed=2"])
def test_spec_syntax_errors(bad):
  with pytest.raises(ValueError):
    data.parse_spec(bad)


def test_parse_folds():
  assert data.parse_folds("1-7") == (1, 2, 3, 4, 5, 6, 7)
  assert data.parse_folds("1,3,5") == (1, 3, 5)
  assert data.parse_folds("1-3,5") == (1, 2, 3, 5)
  for bad in ("x", "1-", "3-1", "1,,2", "-1"):
    with pytest.raises(ValueError, match="folds"):
      data.parse_folds(bad)


def test_bad_option_value_names_spec_and_key():
  with pytest.raises(ValueError, match=r"synthetic:10\?folds=1-x.*folds"):
    data.open_source("synthetic:10?folds=1-x")


def test_unknown_key_error_names_key_spec_and_allowed():
  with pytest.raises(ValueError) as e:
    data.open_source("synthetic:10?sed=1")
  msg = str(e.value)
  assert "'sed'" in msg and "synthetic:10?sed=1" in msg
  for allowed in ("seed", "fs", "seconds", "leads", "folds"):
    assert allowed in msg


def test_unknown_format_lists_known_ones(tmp_path):
  with pytest.raises(ValueError, match=r"unknown data format 'nosuch'.*npy.*synthetic"):
    data.open_source("nosuch:/x")
  with pytest.raises(ValueError, match="no such file or directory '/data/somewhere'"):
    data.open_source("/data/somewhere")
  (tmp_path / "notes.xyz").write_text("hello")
  with pytest.raises(ValueError, match="cannot detect"):
    data.open_source(str(tmp_path / "notes.xyz"))


def test_register_format_is_one_decorated_function():
  @specs.register_format("test_const", options={"n": specs.Option(int, 3)}, reads_path=False)
  def _open(spec, *, n):
    return data.SyntheticSource(n, seed=5, spec=spec)

  src = data.open_source("test_const:?n=4&folds=1,2&leads=V1,I")
  assert len(src) == 2 and src.leads == ("V1", "I")
  assert "test_const" in data.known_formats()


def test_canonical_leads_and_aliases():
  assert data.canonical_lead("DII") == "II"
  assert data.canonical_lead("avr") == "aVR"
  assert data.canonical_lead("Lead I") == "I"
  assert data.canonical_lead("MLII") == "II"
  assert data.canonical_lead("c3") == "V3"
  assert data.parse_leads("I, ii ,V1") == ("I", "II", "V1")
  assert data.parse_leads("limb") == data.LEADS_12[:6]
  np.testing.assert_array_equal(data.lead_indices("V1,I,aVF"), [6, 0, 5])
  with pytest.raises(ValueError, match="unknown lead"):
    data.canonical_lead("V7")
  with pytest.raises(ValueError, match="twice"):
    data.parse_leads("I,DI")


def test_reorder_fills_missing_leads_with_zeros_and_mask():
  x = np.arange(6, dtype=np.float32).reshape(3, 2)
  y, mask = data.reorder(x, ("I", "II", "V1"), ("V1", "aVR", "I"))
  np.testing.assert_array_equal(y, [[4, 5], [0, 0], [0, 1]])
  np.testing.assert_array_equal(mask, [1, 0, 1])
  with pytest.raises(ValueError):
    data.reorder(x, ("I", "II"), ("I",))


def test_synthetic_source_leads_and_folds_options():
  src = data.open_source("synthetic:30?seed=2&leads=V6,I")
  full = data.open_source("synthetic:30?seed=2")
  rec, ref = src[3], full[3]
  assert rec["leads"] == ("V6", "I")
  np.testing.assert_array_equal(rec["signal"], ref["signal"][[11, 0]])
  folds = data.open_source("synthetic:30?seed=2&folds=1-2,10")
  meta = folds.metadata()
  assert len(folds) == 9 and set(meta["fold"]) == {1, 2, 10}
  assert folds[0]["record_id"] == meta["record_id"][0]
  with pytest.raises(ValueError, match="no records in folds"):
    data.open_source("synthetic:30?folds=11")


def test_synthetic_source_is_picklable():
  src = data.open_source("synthetic:10?seed=4&folds=1-5")
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(clone[2]["signal"], src[2]["signal"])


def _write_npy(tmp_path, shape, ids=None, dtype=np.float16):
  path = tmp_path / "signals.npy"
  arr = np.random.default_rng(0).standard_normal(shape).astype(dtype)
  np.save(path, arr)
  if ids is not None:
    (tmp_path / "ids.csv").write_text(ids)
  return path, arr


def test_npy_source(tmp_path):
  path, arr = _write_npy(tmp_path, (5, 12, 100),
                         ids="ecg_id,orig_split\n" + "".join(
                             f"{100 + i},train\n" for i in range(5)))
  src = data.open_source(f"npy:{path}?fs=250")
  assert len(src) == 5 and src.fs == 250 and src.leads == data.LEADS_12
  rec = src[4]
  assert rec["signal"].dtype == np.float32 and rec["signal"].shape == (12, 100)
  np.testing.assert_array_equal(rec["signal"], arr[4].astype(np.float32))
  assert rec["record_id"] == "104" and rec["patient_id"] == "104"
  assert rec["labels"].shape == (0,) and rec["fold"] == 0
  meta = src.metadata()
  assert list(meta["record_id"]) == ["100", "101", "102", "103", "104"]
  assert meta["labels"].shape == (5, 0)
  # Auto-detected from the suffix; picklable without copying the memmap.
  auto = data.open_source(f"{path}?fs=250")
  assert isinstance(auto, data.NpySource)
  assert len(pickle.dumps(auto)) < arr.nbytes
  np.testing.assert_array_equal(pickle.loads(pickle.dumps(auto))[1]["signal"],
                                arr[1].astype(np.float32))


def test_npy_source_errors(tmp_path):
  path, _ = _write_npy(tmp_path, (3, 2, 50))
  with pytest.raises(ValueError, match=r"needs \?fs=<Hz>: a \.npy file does not store"):
    data.open_source(f"npy:{path}")
  with pytest.raises(ValueError, match="signals.npy has 2 leads; name them"):
    data.open_source(f"npy:{path}?fs=100")
  src = data.open_source(f"npy:{path}?fs=100&leads=II,V2")
  assert src[0]["leads"] == ("II", "V2")
  with pytest.raises(ValueError, match="names 3"):
    data.open_source(f"npy:{path}?fs=100&leads=I,II,III")
  flat = tmp_path / "flat.npy"
  np.save(flat, np.zeros((3, 10)))
  with pytest.raises(ValueError, match="flat.npy: expected a 3-D array"):
    data.open_source(f"npy:{flat}?fs=100")
  with pytest.raises(FileNotFoundError, match="missing.npy"):
    data.open_source(f"npy:{tmp_path}/missing.npy?fs=100")


def test_npy_ids_csv_with_wrong_row_count_is_ignored(tmp_path):
  path, _ = _write_npy(tmp_path, (3, 12, 10), ids="ecg_id\n1\n2\n")
  assert data.open_source(f"npy:{path}?fs=100")[0]["record_id"] == "signals-0"


def test_npy_pretraining_corpus(shared_dir):
  path = shared_dir / "data" / "ptbxl-pretrain-250hz" / "signals.npy"
  src = data.open_source(f"npy:{path}?fs=250")
  assert len(src) == 1785 and src.fs == 250.0
  rec = src[0]
  assert rec["signal"].shape == (12, 2500) and rec["signal"].dtype == np.float32
  ids = (shared_dir / "data" / "ptbxl-pretrain-250hz" / "ids.csv").read_text().split()
  assert rec["record_id"] == ids[1].split(",")[0]
  assert src[-1]["record_id"] == ids[-1].split(",")[0]
  # Already per-lead z-scored by its provider (DATA.md).
  assert abs(float(rec["signal"].std(axis=1).mean()) - 1.0) < 0.1
  assert leads_lib.LEADS_12 == src.leads
