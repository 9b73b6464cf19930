"""`python -m ecgjax.data prepare image:DIR OUT`: printouts stored once as fitted pictures."""

import json
import os
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from ecgjax import data
from ecgjax import errors
from ecgjax.data import images
from ecgjax.data import prepare
from ecgjax.data.sources import BadRecordError
from ecgjax.finetune import data as ft_data
from ecgjax.images import __main__ as images_cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

flags.FLAGS.mark_as_parsed()

SMALL = images.preset("eianet", height=64, width=90)


@pytest.fixture(scope="module")
def printouts(tmp_path_factory):
  """12 synthetic 3x4+II printouts at 40 dpi with labels.csv, and one truncated PNG."""
  out = str(tmp_path_factory.mktemp("printouts"))
  images_cli.render_source("synthetic:12?seed=11&fs=500", out, dpi=40.0, progress=False)
  first = sorted(f for f in os.listdir(out) if f.endswith(".png"))[0]
  good = open(os.path.join(out, first), "rb").read()
  with open(os.path.join(out, "zz-truncated.png"), "wb") as f:
    f.write(good[: len(good) // 2])
  return out


@pytest.fixture(scope="module")
def prepared(printouts, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prep") / "small")
  meta = prepare.prepare(f"image:{printouts}", out, SMALL, workers=0, progress=False)
  return out, meta


def test_prepared_pictures_equal_the_contract_applied_to_the_images(printouts, prepared):
  out, meta = prepared
  raw = data.open_source(f"image:{printouts}")
  src = data.open_source(f"prepared:{out}")
  assert src.modality == "image" and meta["shape"] == [64, 90, 1] and meta["dtype"] == "uint8"
  assert meta["counts"]["records"] == 12 and meta["counts"]["bad"] == 1
  assert meta["bad_records"][0]["record_id"] == "zz-truncated"
  assert "truncated PNG" in meta["bad_records"][0]["reason"]
  good = [i for i in range(len(raw)) if raw.metadata()["record_id"][i] != "zz-truncated"]
  m_raw, m_src = raw.metadata(), src.metadata()
  for key in ("record_id", "patient_id", "fold"):
    np.testing.assert_array_equal(m_src[key], m_raw[key][good])
  np.testing.assert_array_equal(m_src["labels"], m_raw["labels"][good])
  for j, i in enumerate(good):
    rec = src[j]
    assert rec["pixels"].shape == (64, 90, 1) and rec["pixels"].dtype == np.uint8
    np.testing.assert_array_equal(rec["pixels"], SMALL.fitted(raw[i]["pixels"]))
    np.testing.assert_array_equal(SMALL.prepare_record(rec), SMALL.prepare_record(raw[i]))


def test_training_and_fine_tuning_read_the_prepared_pictures_unchanged(printouts, prepared):
  out, _ = prepared
  raw = data.SubsetSource(data.open_source(f"image:{printouts}"), range(12))
  src = data.open_source(f"prepared:{out}")
  a = next(data.train_iterator(raw, SMALL, global_batch_size=8, seed=3))
  b = next(data.train_iterator(src, SMALL, global_batch_size=8, seed=3))
  data.check_batch(b, "image")
  np.testing.assert_array_equal(a["pixels"], b["pixels"])
  np.testing.assert_array_equal(a["labels"], b["labels"])
  mem = ft_data.PreparedInMemory(src, SMALL)
  mem_raw = ft_data.PreparedInMemory(raw, SMALL)
  for i in range(len(src)):
    np.testing.assert_array_equal(mem[i]["pixels"], mem_raw[i]["pixels"])


def test_another_contract_is_refused_naming_the_keys(printouts, prepared, tmp_path):
  out, _ = prepared
  rec = data.open_source(f"prepared:{out}")[0]
  with pytest.raises(errors.ContractMismatchError, match="differs in height, width"):
    images.preset("eianet", height=32, width=45).prepare_record(rec)
  with pytest.raises(errors.ContractMismatchError, match="differs in"):
    ft_data.PreparedInMemory(data.open_source(f"prepared:{out}"),
                             images.preset("eianet", height=64, width=90, binarize=False))
  # A signal contract for printouts (and the reverse) is refused before anything is written.
  with pytest.raises(errors.ContractMismatchError, match="image preset"):
    prepare.prepare(f"image:{printouts}", str(tmp_path / "x"), data.Preprocessing(fs=500, samples=5000),
                    workers=0, progress=False)
  with pytest.raises(errors.ContractMismatchError, match="holds signals"):
    prepare.prepare("synthetic:4", str(tmp_path / "y"), SMALL, workers=0, progress=False)
  assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")
  # Preparing prepared pictures under another contract ends the run, not each record.
  with pytest.raises(errors.ContractMismatchError, match="differs in height, width"):
    prepare.prepare(f"prepared:{out}", str(tmp_path / "z"),
                    images.preset("eianet", height=32, width=45), workers=0, progress=False)
  assert not os.path.exists(tmp_path / "z")


def test_a_truncated_shard_is_a_bad_record_naming_it(prepared, tmp_path):
  out, meta = prepared
  copy = tmp_path / "cut"
  os.makedirs(copy)
  for name in os.listdir(out):
    data_bytes = open(os.path.join(out, name), "rb").read()
    if name.startswith("shard-"):  # keep the header and the first 5 pictures
      data_bytes = data_bytes[: 128 + 5 * 64 * 90]
    (copy / name).write_bytes(data_bytes)
  src = data.open_source(f"prepared:{copy}")
  with pytest.raises(BadRecordError, match="shard-00000.npy"):
    src[11]
  meta["shape"] = [64, 91, 1]
  (copy / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="does not match its contract"):
    data.open_source(f"prepared:{copy}")


def test_prepare_command_for_printouts_and_its_errors(printouts, tmp_path):
  out = str(tmp_path / "cli")
  cmd = [sys.executable, "-m", "ecgjax.data", "prepare", f"image:{printouts}", out,
         "--preprocessing", '{"height": 64, "width": 90}', "--workers", "2"]
  r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr
  assert "prepared 12 of 13 records (1 bad)" in r.stdout and "skipped zz-truncated" in r.stdout
  assert "input=image and config.image" in r.stdout
  src = data.open_source(f"auto:{out}")  # two workers, two shards: the same pictures
  ref = data.open_source(f"image:{printouts}")
  np.testing.assert_array_equal(src[3]["pixels"], SMALL.fitted(ref[3]["pixels"]))
  r = subprocess.run(cmd[:5] + [str(tmp_path / "bad"), "--fs", "500"], cwd=REPO,
                     capture_output=True, text=True, timeout=300)
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
  assert "--fs: signal options; an image source is prepared with --preset" in r.stderr
  assert not os.path.exists(tmp_path / "bad")
