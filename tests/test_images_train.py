"""Training on printouts: image batches in THE schema, a ResNet2D step, EIANet fine-tuning."""

import csv
import os

from absl import flags
import numpy as np
import pytest

from ecgjax import data
from ecgjax.data import images
from ecgjax.images import __main__ as images_cli

flags.FLAGS.mark_as_parsed()

SMALL = images.preset("eianet", height=64, width=90)


@pytest.fixture(scope="module")
def printouts(tmp_path_factory):
  """24 synthetic records rendered as 3x4+II printouts at 40 dpi, with labels.csv."""
  out = str(tmp_path_factory.mktemp("printouts"))
  counts = images_cli.render_source("synthetic:24?seed=11&fs=500", out, dpi=40.0,
                                    progress=False)
  assert counts["rendered"] == 24
  return out


def test_image_batches_follow_the_schema(printouts):
  src = data.open_source(f"image:{printouts}")
  it = data.train_iterator(src, SMALL, global_batch_size=8, seed=0)
  b = next(it)
  data.check_batch(b, "image")
  assert b["pixels"].shape == (8, 64, 90, 1) and b["pixels"].dtype == np.float32
  assert set(np.unique(b["pixels"])) <= {0.0, 1.0}
  np.testing.assert_array_equal(b["labels"], src.metadata()["labels"][b["index"]])
  batches = list(data.eval_batches(src, SMALL, batch_size=16))
  for e in batches:
    data.check_batch(e, "image_eval")
  assert sum(int(e["valid"].sum()) for e in batches) == 24
  assert batches[0]["pixels"].shape == (16, 1, 64, 90, 1)


def test_eianet_finetunes_on_printouts_scores_an_external_set_and_explains(printouts,
                                                                         tmp_path):
  """EIANet (mu) fine-tuned on the printouts (2 grouped-CV splits, 1 epoch), the external
  fold-ensemble scores, then finetune/explain.py's Grad-CAM of a split's export."""
  import subprocess, sys
  import cv2
  import jax
  from configs import finetune as ft_config
  from ecgjax.finetune import load, trainer
  c = ft_config.get_config("backbone=resnet2d,input=image,runlocal")
  assert (c.modality, c.model, c.loss, c.image.height) == ("image", "resnet2d", "brl", 128)
  c.data = c.external = f"image:{printouts}"
  c.image.height, c.image.width = 64, 90
  c.epochs, c.batch_size, c.eval_batch_size, c.bootstrap = 1, 8, 8, 20
  c.labels = "NORM,STE"
  workdir = tmp_path / "eianet"
  out = trainer.finetune(c, str(workdir), devices=jax.devices()[:1])
  assert out["n_splits"] == 2 and 0.0 <= out["macro_auroc"] <= 1.0
  rows = list(csv.reader(open(workdir / "predictions_external.csv")))
  assert len(rows) == 25  # header + every printout, scored by the fold ensemble
  assert os.path.isfile(workdir / "predictions.csv")
  from ecgjax import export as export_lib
  exp = export_lib.load_export(str(workdir / "split0" / "export"))
  assert exp.modality == "image" and exp.config["embedding"]["labels"] == ["NORM", "STE"]
  assert "batch_stats" in exp.collections  # the ResNet's BN statistics travel with it

  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  cam_dir = tmp_path / "cam"
  proc = subprocess.run(
      [sys.executable, "finetune/explain.py", "--export", str(workdir / "split0" / "export"),
       "--data",
       f"image:{printouts}", "--method", "gradcam", "--out", str(cam_dir), "--target", "STE",
       "--limit", "3"], cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  z = np.load(cam_dir / "gradcam.npz")
  assert z["cam"].shape == (3, 64, 90) and z["p"].shape == (3, 2) and str(z["target"]) == "STE"
  assert 0 <= z["cam"].min() and z["cam"].max() <= 1
  # The split's export explain.py read is the model the run selected (rebuilt from the
  # workdir here: --run's path).
  model = load.load_split(str(workdir), 0)
  src = data.open_source(f"image:{printouts}")
  x = np.stack([model.preprocessing.prepare_record(src[i]) for i in range(3)])
  np.testing.assert_allclose(model.predict(x), z["p"], rtol=1e-5, atol=1e-6)
  ext = {r[0]: r for r in rows[1:]}
  panel = cv2.imread(str(cam_dir / f"{z['record_id'][0]}.png"))
  assert panel.shape == (64, 3 * 90, 3)  # input | map over it | thresholded view
  assert z["record_id"][0] in ext
  # --run on a folder that is not a run: a MissingPathError, which explain.py's cli.run turns
  # into one line and exit status 2 (tests/test_cli_errors.py, case explain_not_a_run).
  from ecgjax.errors import MissingPathError
  with pytest.raises(MissingPathError, match="not a fine-tuning run"):
    load.load_split(str(tmp_path), 0)


def test_unlabelled_printouts_are_left_out_of_fine_tuning(printouts, tmp_path):
  import shutil
  from ecgjax.finetune import data as ft_data
  root = tmp_path / "imgs"
  shutil.copytree(printouts, root)
  rows = list(csv.reader(open(root / "labels.csv")))
  with open(root / "labels.csv", "w", newline="") as f:
    csv.writer(f).writerows(rows[:-3])  # three images lose their row
  prepared = ft_data.PreparedInMemory(data.open_source(f"image:{root}"), SMALL)
  assert len(prepared) == 24 and len(prepared.good()) == 21
  rec = prepared[int(prepared.good()[0])]
  assert rec["pixels"].shape == (64, 90, 1) and rec["pixels"].dtype == np.uint8


def test_spatial_attention_switch_gives_the_resnet_baseline():
  import jax
  import jax.numpy as jnp
  from ecgjax.objectives import classifier
  x = jnp.zeros((1, 64, 90, 1))
  for on in (True, False):
    b = classifier.build_backbone("resnet2d", "mu", 1, spatial_attention=on)
    params = jax.eval_shape(lambda: b.module.init(jax.random.PRNGKey(0), x))["params"]
    assert any(k.startswith("attention") for k in params["body"]) == on
  with pytest.raises(ValueError, match="applies to the ResNets"):
    classifier.build_backbone("net1d", "mu", 1, spatial_attention=True)


def test_residual_gates_let_the_identity_through_a_closed_gate():
  """attention_residual: x * (1 + a). With every gate shut (a = 0: a large negative kernel)
  the multiplicative net outputs nothing of the picture; the residual one still does."""
  import jax
  import jax.numpy as jnp
  from ecgjax import models
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 90, 1))
  for residual in (False, True):
    m = models.build_model("resnet2d", "mu", num_classes=1, attention_residual=residual)
    v = m.init(jax.random.PRNGKey(1), x)
    shut = jax.tree_util.tree_map_with_path(
        lambda p, w: -1e3 * jnp.ones_like(w) if "attention" in jax.tree_util.keystr(p) else w,
        v)
    _, aux = m.apply(shut, x)
    assert float(jnp.max(aux["attention"][0])) < 1e-6
    assert (float(jnp.abs(aux["features"]).max()) > 1e-3) == residual


def test_page_jitter_moves_the_page_and_keeps_it_binary(printouts):
  from ecgjax.data import augment
  src = data.open_source(f"image:{printouts}")
  x = SMALL.prepare_record(src[0])
  jitter = augment.build("page_jitter", 0.0)
  y = jitter(x, np.random.default_rng(0))
  assert y.shape == x.shape and set(np.unique(y)) <= {0.0, 1.0}
  assert not np.array_equal(x, y) and abs(y.mean() - x.mean()) < 0.02  # moved, not erased
  np.testing.assert_array_equal(y, jitter(x, np.random.default_rng(0)))  # seeded
  plain = next(data.train_iterator(src, SMALL, global_batch_size=8, seed=0))
  moved = next(data.train_iterator(src, SMALL, global_batch_size=8, seed=0, augment=jitter))
  np.testing.assert_array_equal(plain["index"], moved["index"])
  assert not np.array_equal(plain["pixels"], moved["pixels"])
  with pytest.raises(ValueError, match="is for signals, the inputs are images"):
    data.train_iterator(src, SMALL, global_batch_size=8, seed=0,
                        augment=augment.build("st_mem_randaugment", 100.0))
