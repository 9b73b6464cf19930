"""How close each importer is to the official pipeline (SPEC section 10), end to end, on REAL
records of several lengths and rates; prints a markdown table.

  python bench/reference_fidelity.py            # needs ../shared/data and torch

For every group of raw records (PTB-XL at 100 and 500 Hz, CPSC 2018 at 500 Hz and 10-54 s, a
CODE-15-style 400 Hz exam made from a real record), three numbers per model:
- input: the preset's model input against the official pipeline's scipy calls
  (tests/reference_pipelines.py), max |diff| / max |official| over the group;
- input, old contract: the same for the contract ecgjax used before it followed the
  references' code (per-crop z-score for ECG-FM; cascade band-pass, mirrored median, polyphase
  resampling, filtering before the crop for ECGFounder), as relative L2 ||diff|| / ||official||
  (median and max over the group's records);
- embedding: a converted tiny torch model (random weights, tests/interop_refs.py) run through
  `embed_source` on the raw records, against the torch model on the official inputs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import tempfile

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ecgjax import data, interop  # noqa: E402
from ecgjax import eval as eval_lib  # noqa: E402
from ecgjax.data import sources as sources_lib  # noqa: E402
from ecgjax import export as export_lib  # noqa: E402
from tests import format_fixtures, interop_refs  # noqa: E402
from tests import reference_pipelines as ref  # noqa: E402


def _records(root: pathlib.Path, tmp: str) -> dict[str, dict[str, dict]]:
  from scipy import signal as sps  # pylint: disable=g-import-not-at-top
  groups: dict[str, dict[str, dict]] = {}
  for fs in (100, 500):
    src = data.open_source(f"ptbxl:{root / 'ptbxl'}?fs={fs}")
    groups[f"PTB-XL {fs} Hz, 10 s"] = {f"p{fs}-{i}": src[i] for i in range(0, 40, 4)}
  cpsc = data.open_source(f"cpsc2018:{root / 'cpsc2018'}")
  groups["CPSC 2018 500 Hz, 10-54 s"] = {f"c{i}": cpsc[i] for i in range(len(cpsc))}
  code = {}
  for i in range(3):
    real = np.asarray(cpsc[i]["signal"], np.float64)[:, :7335]
    x400 = sps.resample_poly(real, 4, 5, axis=-1)[:, :2934].astype(np.float32)
    padded = np.zeros((1, 4096, 12), np.float32)
    padded[0, 581:581 + 2934] = x400.T
    d = os.path.join(tmp, f"code15_{i}")
    format_fixtures.write_code15(d, [(padded, np.array([100 + i]))])
    code[f"k{i}"] = data.open_source(f"code15:{d}")[0]
  groups["CODE-15-style 400 Hz, 7.3 s"] = code
  return groups


def _max_rel(pairs) -> float:
  return max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in pairs)


def _l2(pairs) -> str:
  errs = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in pairs]
  return f"{np.median(errs):.1e} / {max(errs):.1e}"


class _Listed(sources_lib.Source):
  label_names = ()
  leads = data.LEADS_12
  fs = None
  spec = None

  def __init__(self, records):
    self.names, self.records = sorted(records), records

  def __len__(self):
    return len(self.names)

  def __getitem__(self, i):
    return dict(self.records[self.names[self._check_index(i)]], labels=np.zeros(0, np.float32))

  def metadata(self):
    n = len(self.names)
    return {"record_id": np.array(self.names), "patient_id": np.array(self.names),
            "fold": np.zeros(n, np.int64), "labels": np.zeros((n, 0), np.float32)}


def _embed(conv, records, tmp, name) -> np.ndarray:
  path = interop.save_conversion(conv, os.path.join(tmp, name))
  export = export_lib.load_export(path)
  src = _Listed(records)
  n_crops = eval_lib.default_n_crops(export, src)
  return eval_lib.embed_source(export, src, batch_size=8, n_crops=n_crops,
                               progress=False)["embeddings"]


def main() -> None:
  import torch  # pylint: disable=g-import-not-at-top
  root = REPO.parent / "shared" / "data"
  if not (root / "ptbxl").is_dir():
    sys.exit(f"{root} not found: this benchmark reads the shared real records")
  torch.manual_seed(0)
  nets = {"ST-MEM": interop_refs.randomize(interop_refs.STMEMEncoder(), seed=1).eval(),
          "ECGFounder": interop_refs.randomize(interop_refs.Net1D(), seed=1).eval(),
          "ECG-FM": interop_refs.randomize(interop_refs.ECGFM(), seed=1).eval()}
  state = {k: {n: v.numpy() for n, v in m.state_dict().items()} for k, m in nets.items()}
  presets = {"ST-MEM": data.transforms.preset("st_mem"),
             "ECGFounder": data.transforms.preset("ecgfounder"),
             "ECG-FM": data.transforms.preset("ecg_fm")}
  old = {"ST-MEM": presets["ST-MEM"],
         "ECGFounder": dataclasses.replace(
             presets["ECGFounder"], bandpass_design="cascade", baseline_method="reflect",
             resample_method="poly", standardize_scope="window", standardize_eps=0.0,
             head_s=None),
         "ECG-FM": dataclasses.replace(presets["ECG-FM"], standardize_scope="window")}
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    groups = _records(root, tmp)
    for group, records in groups.items():
      for model in ("ST-MEM", "ECGFounder", "ECG-FM"):
        if model == "ST-MEM" and not group.startswith("PTB-XL"):
          continue  # ST-MEM's evaluation (3 crops of 9 s) is defined on 10 s records
        names = sorted(records)
        official, ours, before = [], [], []
        for n in names:
          r = records[n]
          if model == "ST-MEM":
            want = ref.st_mem_crops(r["signal"], r["fs"])
            got, was = presets[model].crops(r, 3), old[model].crops(r, 3)
          elif model == "ECGFounder":
            want = ref.ecgfounder_input(r["signal"], r["fs"])
            got = presets[model](r)[:, :want.shape[-1]]
            was = old[model](r)[:, :want.shape[-1]]
          else:
            want = ref.ecg_fm_segments(r["signal"], r["fs"])
            got = presets[model].views_of(presets[model].prepare(r)[0])
            was = old[model].views_of(old[model].prepare(r)[0])
          official.append(want)
          ours.append((got, want))
          before.append((was, want))
        # End to end: the converted torch model through embed_source vs torch on official input.
        net = nets[model]
        source = {"ST-MEM": "st-mem", "ECGFounder": "ecgfounder", "ECG-FM": "ecg-fm"}[model]
        ckpt = {"model": state[model]} if model != "ECG-FM" else {
            "cfg": {"model": {"encoder_attention_heads": 2}}, "model": state[model]}
        conv = interop.convert_state_dict(source, ckpt)
        got = _embed(conv, records, tmp, f"{model}-{group[:5]}")
        want = []
        with torch.no_grad():
          for w in official:
            if model == "ECG-FM":
              h = net(torch.from_numpy(w.astype(np.float32)))[1].numpy().astype(np.float64)
              want.append(np.mean([ref.embs_pool(hi) for hi in h], 0))
            elif model == "ECGFounder":
              x = np.pad(w, ((0, 0), (0, 5000 - w.shape[-1])))[None].astype(np.float32)
              want.append(net(torch.from_numpy(x))[1].numpy()[0])
            else:
              want.append(net(torch.from_numpy(w.astype(np.float32)))[0].numpy().mean(0))
        emb = _max_rel([(got, np.stack(want))])
        rows.append((group, model, len(names), _max_rel(ours), _l2(before), emb))
  print("| records | model | n | input vs official (max rel) | old contract (rel L2, median / max) | "
        "embedding vs official (max rel) |")
  print("|---|---|---|---|---|---|")
  for g, m, n, a, b, e in rows:
    print(f"| {g} | {m} | {n} | {a:.1e} | {b} | {e:.1e} |")


if __name__ == "__main__":
  main()
