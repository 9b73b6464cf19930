"""The one plug-in mechanism (ecgjax.registry) behind models, objectives, augmentations,
formats and evaluators, and the one parameter-tree comparison (ecgjax.tree.compare)."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ecgjax import models, objectives, registry, tree
from ecgjax.data import augment
from ecgjax.errors import ConfigError
from ecgjax.train import hooks


def test_every_kind_of_plug_in_is_listed_and_unknown_names_are_config_errors():
  assert {"st_mem", "st_mem_encoder", "ecg_fm", "net1d", "resnet1d", "resnet2d"} <= set(
      models.MODELS.names())
  assert {"mae", "contrastive", "hybrid", "wav2vec2", "supervised"} <= set(
      objectives.OBJECTIVES.names())
  assert set(augment.AUGMENTATIONS.names()) == {"scheduled", "st_mem_randaugment", "page_jitter"}
  assert {"linear_probe", "reconstruction", "validation"} <= set(hooks.evaluator_types())
  with pytest.raises(ConfigError, match=r"unknown model 'vit9'; known: .*st_mem"):
    models.build_model("vit9", "mu")
  with pytest.raises(ConfigError, match=r"config.augment='randaug': unknown augmentation"):
    augment.build("randaug", 250.0)
  import ml_collections  # pylint: disable=g-import-not-at-top
  with pytest.raises(ConfigError, match=r"config.objective='maee': unknown objective"):
    objectives.build(ml_collections.ConfigDict({"objective": "maee"}))
  assert augment.build("none", 250.0) is None
  assert isinstance(augment.build("st_mem_randaugment", 500.0), augment.StMemRandAugment)


def test_registering_twice_is_refused_and_plug_ins_load_by_module_name():
  reg = registry.Registry("thing")
  reg.register("a")(len)
  reg.register("a")(len)  # the same object again (a module re-imported): fine
  with pytest.raises(ValueError, match="registered twice"):
    reg.register("a")(max)
  assert "synthetic" in registry.names("ecgjax.data.formats")
  assert registry.load("ecgjax.eval.evaluators", "linear_probe", "evaluator").Evaluator
  with pytest.raises(ConfigError, match="unknown evaluator 'nope'"):
    registry.load("ecgjax.eval.evaluators", "nope", "evaluator")


def test_tree_compare_names_missing_unexpected_and_reshaped_paths():
  want = {"a": {"w": jax.ShapeDtypeStruct((3, 4), np.float32)}, "b": np.zeros(2)}
  have = {"a": {"w": np.zeros((4, 3))}, "c": np.zeros(1)}
  diff = tree.compare(have, want)
  assert not diff.ok
  assert diff.missing == (("b", (2,)),) and diff.unexpected == (("c", (1,)),)
  assert diff.reshaped == (("a/w", (4, 3), (3, 4)),)
  assert "1 parameter(s) missing (e.g. b)" in diff.summary()
  assert diff.lines("checkpoint", "model")[-1] == "shape of a/w: checkpoint (4, 3) vs model (3, 4)"
  assert tree.compare(want, want).ok
