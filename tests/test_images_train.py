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


def test_eianet_finetunes_on_printouts_and_scores_an_external_set(printouts, tmp_path):
  from configs import finetune as ft_config
  from ecgjax.finetune import trainer
  import jax
  c = ft_config.get_config("backbone=resnet2d,input=image,runlocal")
  assert (c.modality, c.model, c.loss, c.image.height) == ("image", "resnet2d", "brl", 128)
  c.data = c.external = f"image:{printouts}"
  c.image.height, c.image.width = 64, 90
  c.epochs, c.batch_size, c.eval_batch_size, c.bootstrap = 1, 8, 8, 20
  c.labels = "NORM,STE"
  out = trainer.finetune(c, str(tmp_path), devices=jax.devices()[:1])
  assert out["n_splits"] == 2 and 0.0 <= out["macro_auroc"] <= 1.0
  rows = list(csv.reader(open(tmp_path / "predictions_external.csv")))
  assert len(rows) == 25  # header + every printout, scored by the fold ensemble
  assert os.path.isfile(tmp_path / "predictions.csv")


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
