"""Evaluators inside the one loop: the linear probe during pretraining, plug-in lookup, keys."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from ecgjax import data, export as export_lib
from ecgjax.errors import ConfigError
from ecgjax.eval import embed, metrics, probes
from ecgjax.train import hooks, loop
from tests import helpers

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                      "shared", "data", "ptbxl")
TRAIN, TEST = "synthetic:40?seed=11", "synthetic:24?seed=12"


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _probe_config(**overrides):
  c = helpers.tiny_stmem_config(**{"total_steps": 2, "checkpoint_every_steps": 2, **overrides})
  c.evals.probe.train, c.evals.probe.test = TRAIN, TEST
  c.evals.probe.every_steps = 1
  return c


def test_every_pretraining_config_declares_an_off_linear_probe():
  from configs import ecgfm, hybrid, stmem  # pylint: disable=g-import-not-at-top
  for c in (stmem.get_config("variant=mu"), ecgfm.get_config("variant=mu"),
            hybrid.get_config("variant=mu"), hybrid.get_config("variant=mu,preset=contrastive")):
    assert c.evals.probe.type == "linear_probe"
    assert (c.evals.probe.train, c.evals.probe.test, c.evals.probe.every_steps) == ("", "", 0)


def test_linear_probe_rows_during_pretraining_equal_the_probe_suite_on_the_export(tmp_path):
  workdir = str(tmp_path / "run")
  loop.train(_probe_config(), workdir)
  rows = _rows(workdir)
  evals = [r for r in rows if "eval/probe/macro_auroc" in r]
  assert [r["step"] for r in evals] == [1, 2]
  labels = data.open_source(TRAIN).label_names
  for r in evals:
    assert 0.0 <= r["eval/probe/macro_auroc"] <= 1.0
    assert {f"eval/probe/{l}/auroc" for l in labels} <= set(r)
    assert (r["eval/probe/n_train"], r["eval/probe/n_test"]) == (40, 24)
  # Training rows are untouched: loss at every step.
  assert [r["step"] for r in rows if "loss" in r] == [1, 2]
  # The last row is what the probe suite gives on the export the run wrote (same encoder).
  exp = export_lib.load_export(os.path.join(workdir, "export"))
  tr = embed.embed_source(exp, data.open_source(TRAIN), progress=False,
                          n_crops=embed.default_n_crops(exp, data.open_source(TRAIN)))
  te = embed.embed_source(exp, data.open_source(TEST), progress=False,
                          n_crops=embed.default_n_crops(exp, data.open_source(TEST)))
  p = probes.fit_predict_logreg(tr["embeddings"], tr["labels"], te["embeddings"],
                                on_single_class="nan", groups=tr["patient_id"])
  ok = [j for j in range(p.shape[1]) if np.isfinite(p[:, j]).all()]
  want = metrics.summarize(te["labels"][:, ok] > 0.5, p[:, ok], [labels[j] for j in ok])
  assert evals[-1]["eval/probe/macro_auroc"] == pytest.approx(want["macro_auroc"], abs=1e-4)


def test_probe_on_eight_devices_matches_one(tmp_path):
  c = _probe_config(total_steps=1, export_at_end=False)
  loop.train(c, str(tmp_path / "one"), devices=jax.devices()[:1])
  loop.train(c, str(tmp_path / "eight"), devices=jax.devices())
  a = [r for r in _rows(tmp_path / "one") if "eval/probe/macro_auroc" in r]
  b = [r for r in _rows(tmp_path / "eight") if "eval/probe/macro_auroc" in r]
  assert len(a) == len(b) == 1
  assert b[0]["eval/probe/macro_auroc"] == pytest.approx(a[0]["eval/probe/macro_auroc"],
                                                         abs=2e-3)


def test_evaluator_mistakes_name_the_key():
  ctx = hooks.EvalContext(mesh=None, objective=None, shardings=None, preprocessing=None,
                          workdir="/tmp")
  with pytest.raises(ConfigError, match=r"unknown evaluator type.*'linear_prob'.*linear_probe"):
    hooks.build_evaluators({"p": {"type": "linear_prob"}}, ctx)
  with pytest.raises(ConfigError, match=r"config.evals.p has no 'type'"):
    hooks.build_evaluators({"p": {"every_steps": 3}}, ctx)
  with pytest.raises(ConfigError, match=r"config.evals.p: unknown key\(s\) \['every_step'\]"):
    hooks.build_evaluators({"p": {"type": "linear_probe", "every_step": 3}}, ctx)
  with pytest.raises(ConfigError, match="give both train and test"):
    hooks.build_evaluators({"p": {"type": "linear_probe", "train": TRAIN}}, ctx)
  # Off (no data): built, logged, not run.
  assert hooks.build_evaluators({"p": {"type": "linear_probe"}}, ctx) == []


def test_evaluators_are_found_by_module_name():
  assert {"linear_probe", "reconstruction", "validation"} <= set(hooks.evaluator_types())


@pytest.mark.skipif(not os.path.isdir(SHARED), reason="needs ../shared/data/ptbxl")
def test_linear_probe_on_real_ptbxl_folds(tmp_path):
  c = helpers.tiny_stmem_config(total_steps=2, export_at_end=False)
  spec = f"ptbxl:{os.path.abspath(SHARED)}?fs=500"
  c.evals.probe.train, c.evals.probe.test = f"{spec}&folds=1-6", f"{spec}&folds=7-8"
  loop.train(c, str(tmp_path))
  (row,) = [r for r in _rows(tmp_path) if "eval/probe/macro_auroc" in r]
  assert row["step"] == 2 and row["eval/probe/n_train"] + row["eval/probe/n_test"] == 353
  assert 0.3 < row["eval/probe/macro_auroc"] < 1.0
  assert {"eval/probe/NORM/auroc", "eval/probe/MI/auroc"} <= set(row)
