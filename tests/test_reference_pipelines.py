"""The presets reproduce the official pipelines (SPEC section 10) on REAL records of several
lengths and rates: PTB-XL at 100 and 500 Hz (10 s), CPSC 2018 at 500 Hz (10-54 s) and a
CODE-15-style 400 Hz exam (a real record, zero-padded to 4096 as CODE-15 stores it, read back
through the code15 reader). Each preset is compared with the scipy calls the reference makes
(tests/reference_pipelines.py) to 1e-6 relative, and end to end: a converted tiny torch model's
embeddings of the raw records against the torch model on the official inputs."""

import numpy as np
import pytest
from scipy import signal as sps

from ecgjax import data, interop
from ecgjax import eval as eval_lib
from ecgjax.data import sources as sources_lib
from ecgjax import export as export_lib
from tests import reference_pipelines as ref
from tests import format_fixtures
from tests.helpers import rel_err

TOL = 1e-6


@pytest.fixture(scope="module")
def records(shared_dir, tmp_path_factory):
  """{name: record} of raw real records: PTB-XL 100/500 Hz, CPSC 2018, CODE-15-style 400 Hz."""
  root = shared_dir / "data"
  if not (root / "ptbxl").is_dir() or not (root / "cpsc2018").is_dir():
    pytest.skip(f"{root} lacks ptbxl/ or cpsc2018/")
  out = {}
  for fs in (100, 500):
    src = data.open_source(f"ptbxl:{root / 'ptbxl'}?fs={fs}")
    for i in (0, 7):
      out[f"ptbxl{fs}-{i}"] = src[i]
  cpsc = data.open_source(f"cpsc2018:{root / 'cpsc2018'}")
  for i in range(len(cpsc)):
    out[f"cpsc-{cpsc[i]['record_id']}"] = cpsc[i]
  # CODE-15 stores 400 Hz exams zero-padded to 4096 samples; a 2934-sample exam is the case
  # SPEC names (3667 samples at 500 Hz: one segment). Made from a real 500 Hz record.
  real = np.asarray(cpsc[0]["signal"], np.float64)[:, :7335]
  x400 = sps.resample_poly(real, 4, 5, axis=-1)[:, :2934].astype(np.float32)
  padded = np.zeros((1, 4096, 12), np.float32)
  padded[0, 581:581 + 2934] = x400.T
  d = tmp_path_factory.mktemp("code15")
  format_fixtures.write_code15(d, [(padded, np.array([101]))])
  exam = data.open_source(f"code15:{d}")[0]
  assert exam["signal"].shape == (12, 2934) and exam["fs"] == 400
  out["code15-101"] = exam
  return out


def test_ecg_fm_preset_is_fairseq_signals(records):
  pp = data.Preprocessing.from_dict(data.transforms.preset("ecg_fm").to_dict())
  errs = {}
  for name, rec in records.items():
    x, _ = pp.prepare(rec)
    got = pp.views_of(x)
    want = ref.ecg_fm_segments(rec["signal"], rec["fs"])
    assert got.shape == want.shape, name
    errs[name] = rel_err(got, want)
  print("ECG-FM preset vs fairseq-signals, max rel err:", f"{max(errs.values()):.1e}")
  assert max(errs.values()) < TOL, errs
  # Every segment of a long record, remainder dropped; the CODE-15 exam has one.
  assert len(pp.views_of(pp.prepare(records["code15-101"])[0])) == 1
  longest = max((r for n, r in records.items() if n.startswith("cpsc")),
                key=lambda r: r["signal"].shape[-1])
  assert len(pp.views_of(pp.prepare(longest)[0])) == longest["signal"].shape[-1] // 2500


def test_ecgfounder_preset_is_its_code(records):
  pp = data.Preprocessing.from_dict(data.transforms.preset("ecgfounder").to_dict())
  errs = {}
  for name, rec in records.items():
    got = pp(rec)
    want = ref.ecgfounder_input(rec["signal"], rec["fs"])
    assert got.shape == (12, 5000), name
    n = want.shape[-1]
    errs[name] = rel_err(got[:, :n], want)
    assert not got[:, n:].any(), name  # shorter than 10 s: zero-padded after the z-score
  print("ECGFounder preset vs its code, max rel err:", f"{max(errs.values()):.1e}")
  assert max(errs.values()) < TOL, errs


def test_st_mem_preset_is_unchanged(records):
  pp = data.st_mem_preprocessing()
  for name in ("ptbxl100-0", "ptbxl500-0", "ptbxl500-7"):
    rec = records[name]
    got = pp.crops(rec, 3)
    want = ref.st_mem_crops(rec["signal"], rec["fs"])
    assert rel_err(got, want) < 1e-5, name


def test_a_record_shorter_than_one_segment_is_a_named_bad_record(monkeypatch):
  from ecgjax.data import eval_pipeline  # pylint: disable=g-import-not-at-top
  seen = []
  monkeypatch.setattr(eval_pipeline, "_report_bad", seen.append)
  pp = data.transforms.preset("ecg_fm")
  src = data.open_source("synthetic:3?seed=73&fs=500&seconds=4")
  assert not list(data.eval_batches(src, pp, batch_size=4))
  assert len(seen) == 3 and all("shorter than one 5 s segment" in e.reason for e in seen)
  assert seen[0].record_id == src[0]["record_id"]


# ------------------------------------------------- end to end: raw record -> embedding


def _torch_refs():
  pytest.importorskip("torch", reason="the torch reference models need torch (CI has it)")
  from tests import interop_refs  # pylint: disable=g-import-not-at-top
  return interop_refs


def _subset(records, names):
  """A Source over the named records (any lengths and rates)."""

  class _Listed(sources_lib.Source):
    label_names = ()
    leads = data.LEADS_12
    fs = None
    spec = None

    def __len__(self):
      return len(names)

    def __getitem__(self, i):
      return dict(records[names[self._check_index(i)]], labels=np.zeros(0, np.float32))

    def metadata(self):
      n = len(names)
      return {"record_id": np.array(names), "patient_id": np.array(names),
              "fold": np.zeros(n, np.int64), "labels": np.zeros((n, 0), np.float32)}

  return _Listed()


def _export(conv, tmp_path):
  return export_lib.load_export(interop.save_conversion(conv, str(tmp_path / "export")))


def test_ecg_fm_end_to_end_on_raw_records(records, tmp_path):
  refs = _torch_refs()
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = refs.randomize(refs.ECGFM(), seed=1).eval()
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  conv = interop.convert_state_dict(
      "ecg-fm", {"cfg": {"model": {"encoder_attention_heads": 2}}, "model": state})
  export = _export(conv, tmp_path)
  names = sorted(records)
  got = eval_lib.embed_source(export, _subset(records, names), batch_size=4, progress=False)
  want = []
  for name in names:
    segs = ref.ecg_fm_segments(records[name]["signal"], records[name]["fs"])
    with torch.no_grad():
      h = net(torch.from_numpy(segs.astype(np.float32)))[1].numpy().astype(np.float64)
    want.append(np.mean([ref.embs_pool(hi) for hi in h], axis=0))
  err = rel_err(got["embeddings"], np.stack(want))
  print(f"ECG-FM import end to end on {len(names)} raw records (100/400/500 Hz, 7-54 s): "
        f"rel err {err:.1e}")
  assert err < 1e-5


def test_ecgfounder_end_to_end_on_raw_records(records, tmp_path):
  refs = _torch_refs()
  import torch  # pylint: disable=g-import-not-at-top
  torch.manual_seed(0)
  net = refs.randomize(refs.Net1D(), seed=1).eval()
  state = {k: v.numpy() for k, v in net.state_dict().items()}
  # Written the way its trainer writes it (util.save_checkpoint).
  conv = interop.convert_state_dict("ecgfounder", {"epoch": 3, "state_dict": state,
                                                    "val_auroc": np.float64(0.9)})
  export = _export(conv, tmp_path)
  names = [n for n in sorted(records) if not n.startswith("code15")]  # 10 s and longer
  got = eval_lib.embed_source(export, _subset(records, names), batch_size=4, progress=False)
  x = np.stack([ref.ecgfounder_input(records[n]["signal"], records[n]["fs"]) for n in names])
  with torch.no_grad():
    want = net(torch.from_numpy(x.astype(np.float32)))[1].numpy()
  err = rel_err(got["embeddings"], want)
  print(f"ECGFounder import end to end on {len(names)} raw records (100/500 Hz, 10-54 s): "
        f"rel err {err:.1e}")
  assert err < 1e-5


def test_constant_lead_rule_and_any_rate(records):
  # ECG-FM's 'zero' strategy: a flat lead becomes zeros, the others are z-scored as usual.
  rec = dict(records["ptbxl500-0"])
  x = np.array(rec["signal"], np.float32)
  x[3] = 0.25
  rec["signal"] = x
  pp = data.transforms.preset("ecg_fm")
  got = pp.views_of(pp.prepare(rec)[0])
  want = ref.ecg_fm_segments(x, 500)
  assert not got[:, 3].any() and not want[:, 3].any()
  assert rel_err(got, want) < TOL
  # Rates no PTB-XL/CPSC file has (257 Hz, 360 Hz): both presets still follow the reference.
  for fs in (257.0, 360.0):
    y = sps.resample(np.asarray(records["cpsc-A1980"]["signal"], np.float64)[:, :6000],
                     int(6000 * fs / 500), axis=-1).astype(np.float32)
    r = data.make_record(y, fs, data.LEADS_12, f"odd-{fs:g}")
    fm = data.transforms.preset("ecg_fm")
    assert rel_err(fm.views_of(fm.prepare(r)[0]), ref.ecg_fm_segments(y, fs)) < TOL
    fo = data.transforms.preset("ecgfounder")
    want = ref.ecgfounder_input(y, fs)
    assert rel_err(fo(r)[:, :want.shape[-1]], want) < TOL
