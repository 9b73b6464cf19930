"""WFDB records as they occur in PhysioNet databases: ECG leads mixed with ABP (mmHg), PLETH
(NU) and unrecognised channels; features the decoder refuses (multi-segment, skew, several
samples per frame, formats 8/310/311/508/516/524) as named bad records beside good ones;
labels=auto decided from every header."""

import numpy as np
import pytest

from ecgjax import data
from ecgjax.data import sources
from ecgjax.data.formats import wfdb as wfdb_format
from tests import format_fixtures as fx




def _set_units(hea, units: dict[str, str]) -> None:
  """Rewrites the gain/units field of the signal lines named in `units` (name -> 'gain/unit')."""
  lines = open(hea).read().splitlines()
  for i, line in enumerate(lines[1:], 1):
    tok = line.split()
    if tok and not line.startswith("#") and tok[-1] in units:
      tok[2] = units[tok[-1]]
      lines[i] = " ".join(tok)
  with open(hea, "w") as f:
    f.write("\n".join(lines) + "\n")


def test_non_lead_channels_are_left_out_and_listed(tmp_path, monkeypatch):
  warned, infos = [], []
  monkeypatch.setattr(wfdb_format.logging, "warning", lambda *a: warned.append(a[0] % a[1:]))
  monkeypatch.setattr(wfdb_format.logging, "info", lambda *a: infos.append(a[0] % a[1:]))
  names = tuple(data.LEADS_12) + ("ABP", "PLETH", "Foo")
  digital = fx.random_digital(15, 1000, seed=3)
  digital[12, 10:20] = -(2 ** 15)  # WFDB's missing-value code in ABP: not a lead's problem
  hea = fx.write_wfdb(tmp_path, "mixed", digital, leads=names)
  _set_units(hea, {"ABP": "100(0)/mmHg", "PLETH": "1000(0)/NU"})
  rec = data.open_source(f"wfdb:{tmp_path}")[0]
  assert rec["signal"].shape == (12, 1000) and rec.get("lead_mask") is None
  np.testing.assert_allclose(rec["signal"], digital[:12] / 200.0, rtol=1e-6)
  assert any("'Foo'" in w and "not recognised" in w for w in warned), warned
  assert any("ABP, PLETH" in i for i in infos), infos
  # A lead channel that is not in volts is still refused, naming it.
  _set_units(hea, {"V3": "100(0)/mmHg"})
  with pytest.raises(sources.BadRecordError, match="'V3' is in units 'mmHg'"):
    data.open_source(f"wfdb:{tmp_path}")[0]


@pytest.mark.parametrize("fmt,feature", [
    ("8", "format 8"), ("310", "format 310"), ("311", "format 311"), ("508", "format 508"),
    ("516", "format 516"), ("524", "format 524"), ("16x2", "samples per frame or skew"),
    ("16:4", "samples per frame or skew")])
def test_unsupported_features_are_named_bad_records_beside_good_ones(tmp_path, fmt, feature):
  good = fx.random_digital(12, 600, seed=1)
  fx.write_wfdb(tmp_path, "a_good", good)
  fx.write_wfdb(tmp_path, "b_bad", fx.random_digital(12, 600, seed=2), fmt=fmt,
                checksum=False)
  fx.write_wfdb(tmp_path, "c_good", good)
  src = data.open_source(f"wfdb:{tmp_path}")
  with pytest.raises(sources.BadRecordError) as e:
    src[1]
  assert e.value.record_id == "b_bad" and feature in e.value.reason
  assert "b_bad.hea" in e.value.reason
  before = data.bad_record_count()
  batches = list(data.eval_batches(src, data.st_mem_preprocessing(), batch_size=4))
  assert data.bad_record_count() - before == 1
  assert list(batches[0]["record_id"][batches[0]["valid"]]) == ["a_good", "c_good"]


def test_multi_segment_record_is_a_named_bad_record(tmp_path):
  fx.write_wfdb(tmp_path, "a_good", fx.random_digital(12, 600))
  (tmp_path / "m.hea").write_text("m/2 12 500 1200\nm_001 600\nm_002 600\n")
  src = data.open_source(f"wfdb:{tmp_path}")
  assert list(src.metadata()["record_id"]) == ["a_good", "m"]
  with pytest.raises(sources.BadRecordError, match="multi-segment") as e:
    src[1]
  assert e.value.record_id == "m" and "m.hea" in e.value.reason
  assert src[0]["signal"].shape == (12, 600)


def test_labels_auto_reads_every_header(tmp_path):
  d = fx.random_digital(12, 500)
  fx.write_wfdb(tmp_path, "A0001", d)  # no '# Dx:' in the first header
  fx.write_wfdb(tmp_path, "A0002", d, comments=["Age: 60", "Dx: 164889003,59118001"])
  src = data.open_source(f"wfdb:{tmp_path}")
  assert src.label_mode == "dx" and src.label_names == ("59118001", "164889003")
  np.testing.assert_array_equal(src.metadata()["labels"], [[0, 0], [1, 1]])
  empty = tmp_path / "none"
  fx.write_wfdb(empty, "B1", d)
  assert data.open_source(f"wfdb:{empty}").label_mode == "none"
