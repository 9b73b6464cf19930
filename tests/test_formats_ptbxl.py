"""The `ptbxl:` reader: DATA.md ground truth on the shared subset, errors on fixtures."""

import os
import pickle

import numpy as np
import pytest

from ecgjax import data
from ecgjax.data.formats import ptbxl
from tests import format_fixtures as ff


@pytest.fixture(scope="module")
def ptbxl_dir(shared_dir):
  root = shared_dir / "data" / "ptbxl"
  if not root.is_dir():
    pytest.skip(f"{root} not found: shared PTB-XL subset is not on this machine")
  return root


def test_ground_truth_counts(ptbxl_dir):
  src = data.open_source(f"ptbxl:{ptbxl_dir}")
  assert len(src) == 353 and src.fs == 500.0
  assert src.label_names == ("NORM", "MI", "STTC", "CD", "HYP")
  meta = src.metadata()
  assert len(set(meta["patient_id"])) == 339
  assert np.bincount(meta["fold"], minlength=9)[1:].tolist() == [58, 51, 34, 42, 47, 33, 44, 44]
  counts = dict(zip(src.label_names, meta["labels"].sum(0).astype(int).tolist()))
  assert counts == {"NORM": 225, "STTC": 59, "CD": 57, "MI": 49, "HYP": 25}
  assert int((meta["labels"].sum(1) == 0).sum()) == 1
  assert meta["record_id"][0] == "1" and meta["patient_id"][0] == "15709"
  assert not any(p.endswith(".0") for p in meta["patient_id"])


def test_signals_and_metadata_agree(ptbxl_dir):
  src = data.open_source(f"ptbxl:{ptbxl_dir}")
  meta = src.metadata()
  for i in range(0, len(src), 7):
    rec = src[i]
    assert rec["signal"].shape == (12, 5000) and rec["signal"].dtype == np.float32
    assert np.isfinite(rec["signal"]).all() and rec["fs"] == 500.0
    assert rec["leads"] == data.LEADS_12
    assert rec["record_id"] == meta["record_id"][i]
    assert rec["patient_id"] == meta["patient_id"][i]
    assert rec["fold"] == meta["fold"][i]
    np.testing.assert_array_equal(rec["labels"], meta["labels"][i])
  # Record 1 is normal; its lead I starts at -0.115 mV (digital -115, gain 1000).
  rec = src[0]
  np.testing.assert_array_equal(rec["labels"], [1, 0, 0, 0, 0])
  assert rec["signal"][0, 0] == np.float32(-0.115)
  clone = pickle.loads(pickle.dumps(src))
  np.testing.assert_array_equal(clone[5]["signal"], src[5]["signal"])


def test_options_fs_folds_label_sets(ptbxl_dir):
  lr = data.open_source(f"ptbxl:{ptbxl_dir}?fs=100")
  assert lr.fs == 100.0 and lr[0]["signal"].shape == (12, 1000)
  train = data.open_source(f"ptbxl:{ptbxl_dir}?folds=1-7")
  assert len(train) == 309 and set(train.metadata()["fold"].tolist()) == set(range(1, 8))
  sub = data.open_source(f"ptbxl:{ptbxl_dir}?labels=subclass")
  assert list(sub.label_names) == sorted(sub.label_names) and "IMI" in sub.label_names
  assert len(sub.label_names) == 23
  every = data.open_source(f"ptbxl:{ptbxl_dir}?labels=all")
  assert len(every.label_names) == 71 and "SR" in every.label_names
  assert (every.metadata()["labels"].sum(1) > 0).all()
  assert type(data.open_source(str(ptbxl_dir))).__name__ == "PtbxlSource"
  with pytest.raises(ValueError, match="fs=250"):
    data.open_source(f"ptbxl:{ptbxl_dir}?fs=250")
  with pytest.raises(ValueError, match="labels"):
    data.open_source(f"ptbxl:{ptbxl_dir}?labels=diagnostics")


def test_benchmark_tasks_on_the_shared_subset(ptbxl_dir):
  """The six tasks' label counts are the full release's (from scp_statements.csv: 71, 44, 23,
  5, 19, 12); each task leaves out the records without a label of it; superclass keeps all."""
  want = {"all": 71, "diagnostic": 44, "subdiagnostic": 23, "superdiagnostic": 5, "form": 19,
          "rhythm": 12}
  records = {}
  for task, n_labels in want.items():
    src = data.open_source(f"ptbxl:{ptbxl_dir}?labels={task}")
    labels = src.metadata()["labels"]
    assert len(src.label_names) == n_labels and labels.any(1).all(), task
    records[task] = len(src)
  # DATA.md: one of the 353 records has no diagnostic superclass.
  assert records["superdiagnostic"] == records["diagnostic"] == 352 and records["all"] == 353
  assert data.open_source(f"ptbxl:{ptbxl_dir}?labels=superdiagnostic").label_names == (
      "NORM", "MI", "STTC", "CD", "HYP")
  assert records["form"] < records["rhythm"] < 353
  assert len(data.open_source(f"ptbxl:{ptbxl_dir}?labels=superclass")) == 353


@pytest.fixture
def tiny(tmp_path):
  return ff.write_ptbxl(tmp_path / "ptbxl", [
      {"ecg_id": 1, "patient_id": "11.0", "scp_codes": {"NORM": 100.0, "SR": 0.0}, "fold": 1},
      {"ecg_id": 2, "patient_id": "11.0", "scp_codes": {"IMI": 50.0, "LVH": 0.0}, "fold": 2},
      {"ecg_id": 3, "patient_id": "12.0", "scp_codes": {"LVOLT": 0.0}, "fold": 9},
      {"ecg_id": 4, "patient_id": "13.0", "scp_codes": {}, "fold": 10, "skip_files": True},
  ])


def test_fixture_labels_and_ids(tiny):
  src = data.open_source(f"ptbxl:{tiny}")
  meta = src.metadata()
  np.testing.assert_array_equal(
      meta["labels"], [[1, 0, 0, 0, 0], [0, 1, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
  assert list(meta["patient_id"]) == ["11", "11", "12", "13"]
  assert src[0]["signal"].shape == (12, 100)
  every = data.open_source(f"ptbxl:{tiny}?labels=all")
  assert every.label_names == ("IMI", "LVH", "LVOLT", "NORM", "SR")
  np.testing.assert_array_equal(every.metadata()["labels"][0], [0, 0, 0, 1, 1])
  assert data.open_source(f"ptbxl:{tiny}?labels=subclass").label_names == ("IMI", "LVH", "NORM")
  # The benchmark's tasks: by the statements' flags, records without a label of the task left
  # out (record 3 has only LVOLT, a form code; record 4 no code at all).
  def task(name):
    s = data.open_source(f"ptbxl:{tiny}?labels={name}")
    return s.label_names, s.metadata()["record_id"].tolist(), s.metadata()["labels"].tolist()
  assert task("rhythm") == (("SR",), ["1"], [[1]])
  assert task("form") == (("LVOLT",), ["3"], [[1]])
  assert task("diagnostic") == (("IMI", "LVH", "NORM"), ["1", "2"], [[0, 0, 1], [1, 1, 0]])
  assert task("superdiagnostic")[1] == ["1", "2"]
  assert task("all")[1] == ["1", "2", "3"]
  assert len(data.open_source(f"ptbxl:{tiny}?labels=superclass")) == 4  # keeps every record


def test_errors_name_paths(tiny, tmp_path):
  src = data.open_source(f"ptbxl:{tiny}")
  with pytest.raises(data.BadRecordError, match=r"missing header file .*00004_hr\.hea") as e:
    src[3]
  assert e.value.record_id == "4"
  os.remove(os.path.join(tiny, "records500", "00000", "00002_hr.dat"))
  with pytest.raises(data.BadRecordError, match=r"missing signal file .*00002_hr\.dat"):
    src[1]
  with pytest.raises(ValueError, match="no such (file or )?directory"):
    data.open_source(f"ptbxl:{tmp_path / 'absent'}")
  os.remove(os.path.join(tiny, "scp_statements.csv"))
  with pytest.raises(ValueError, match=r"missing index file .*scp_statements\.csv"):
    data.open_source(f"ptbxl:{tiny}")
  assert ptbxl.detect(tiny) and not ptbxl.detect(str(tmp_path))
