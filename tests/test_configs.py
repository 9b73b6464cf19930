"""Config files: argument parsing, variants, every key declared."""

import pytest

from configs import stmem
from ecgjax.configs import parse_arg


def test_parse_arg_types_and_flags():
  a = parse_arg("variant=S/75,runlocal", variant="B/75", runlocal=False)
  assert a.variant == "S/75" and a.runlocal is True
  assert parse_arg(None, variant="B/75", runlocal=False).runlocal is False
  assert parse_arg("runlocal=false", runlocal=True).runlocal is False


@pytest.mark.parametrize("bad, match", [("varient=S/75", "unknown config argument 'varient'"),
                                        ("variant", "needs a value"),
                                        ("runlocal=maybe", "expects a boolean")])
def test_parse_arg_errors_name_the_key(bad, match):
  with pytest.raises(ValueError, match=match):
    parse_arg(bad, variant="B/75", runlocal=False)


@pytest.mark.parametrize("variant", ["mu", "S/75", "B/75", "L/75"])
def test_stmem_config_variants(variant):
  c = stmem.get_config(f"variant={variant}")
  assert c.variant == variant
  for key in ("data", "batch_size", "total_steps", "log_every_steps",
              "checkpoint_every_steps", "seed", "variant"):
    assert key in c
  local = stmem.get_config(f"variant={variant},runlocal")
  assert local.total_steps < c.total_steps and local.batch_size < c.batch_size


def test_config_is_locked_against_typos():
  c = stmem.get_config("variant=mu")
  c.lock()
  with pytest.raises(AttributeError):
    c.bacth_size = 3


def test_corpus_preset_records_what_the_data_already_had():
  c = stmem.get_config("variant=S/75,corpus=ptbxl250")
  assert c.data.startswith("npy:../shared/data/ptbxl-pretrain-250hz/signals.npy")
  assert c.input.standardize == "per_lead" and tuple(c.input.bandpass) == (0.5, 40.0)
  with pytest.raises(ValueError, match="known corpora"):
    stmem.get_config("corpus=mimic")


@pytest.mark.parametrize("variant", ["mu", "small", "base"])
def test_ecgfm_config_builds_its_objective(variant):
  from configs import ecgfm
  from ecgjax import objectives
  c = ecgfm.get_config(f"variant={variant}")
  # ECG-FM's recipe: 10 s records cut into two 5 s segments, CMSC between them, RLM p = 0.5.
  assert (c.objective, c.model, c.input.fs, c.input.samples) == ("wav2vec2", "ecg_fm", 500.0, 5000)
  assert (c.views, c.cmsc_weight, c.lead_drop_p, c.positives) == (2, 1.0, 0.5, "patient")
  assert c.base_lr * c.batch_size / 256 == pytest.approx(5e-5) and c.min_lr_ratio == 1.0
  obj = objectives.build(c)
  assert obj.samples == 2500 and obj.frames == 156
  local = ecgfm.get_config(f"variant={variant},runlocal")
  assert local.batch_size == 16 and "mask_ratio" not in local


def _parsed(config_file: str, *flags: str):
  """The config as pretrain/main.py sees it: config_flags parsing `flags` (locked)."""
  from absl import flags as absl_flags
  from ml_collections import config_flags
  argv = ["prog", f"--config={config_file}", *flags]
  values = absl_flags.FlagValues()
  config_flags.DEFINE_config_file("config", None, flag_values=values, lock_config=True,
                                  sys_argv=argv)  # override flags are defined from argv
  values(argv)
  return values.config


@pytest.mark.parametrize("flag", ["--config.mask_ratio=0.5", "--config.mae.mask_ratio=0.5"])
def test_a_moved_key_answers_under_both_names(flag):
  from ecgjax import objectives
  c = _parsed("configs/stmem.py:variant=mu", flag)
  assert c.mask_ratio == c.mae.mask_ratio == 0.5
  assert objectives.build(c).model.mask_ratio == 0.5  # the objective reads the group


def test_groups_hold_what_the_objective_modules_declare():
  from configs import ecgfm, hybrid
  from ecgjax import objectives
  from ecgjax.objectives import contrastive, masked_autoencoder, wav2vec2
  assert dict(stmem.get_config("variant=mu").mae) == masked_autoencoder.DEFAULTS
  assert set(hybrid.get_config("variant=mu").hybrid) == set(objectives.defaults("hybrid"))
  assert set(ecgfm.get_config("recipe=cmsc").contrastive) == set(contrastive.DEFAULTS)
  full = ecgfm.get_config("variant=mu").wav2vec2
  assert set(full) == set(wav2vec2.DEFAULTS)
  assert full.mask_prob == wav2vec2.DEFAULTS["mask_prob"] and full.views == 2
  from configs import finetune
  from ecgjax.objectives import supervised
  ft = finetune.get_config("recipe=ecg_fm,backbone=export")
  assert set(ft.supervised) == set(supervised.DEFAULTS)
  assert ft.supervised.pos_weight == ft.pos_weight == "balanced"  # the recipe set the alias


def test_missing_group_and_unknown_group_key_are_config_errors():
  from ecgjax import configs, objectives
  from ecgjax.errors import ConfigError
  c = stmem.get_config("variant=mu")
  del c["mae"]
  with pytest.raises(ConfigError, match=r"config.mae: missing"):
    objectives.build(c)
  with pytest.raises(ValueError, match=r"unknown objective 'mae' keys \['mask_ration'\]"):
    configs.objective("mae", mask_ration=0.5)


def test_input_group_is_the_contract_preset():
  from ecgjax import configs, contract
  for name in contract.PRESETS:
    got = contract.InputContract.from_dict(configs.input_contract(name).to_dict())
    assert got == contract.preset(name)
  # Unset optional fields stay settable from the command line (typed placeholders).
  c = _parsed("configs/stmem.py:variant=mu", "--config.input.notch=60")
  assert c.input.notch == 60.0


def _flat(c, prefix=""):
  out = {}
  for k, v in c.items():
    out.update(_flat(v, f"{prefix}{k}.") if hasattr(v, "items") else {f"{prefix}{k}": v})
  return out


def test_hybrid_ablation_arms_differ_in_the_objective_only():
  from configs import hybrid  # pylint: disable=g-import-not-at-top
  arms = {p: _flat(hybrid.get_config(f"variant=mu,preset={p},corpus=ptbxl250"))
          for p in hybrid.PRESETS}
  h, m, c = arms["hybrid"], arms["mae"], arms["contrastive"]
  # MAE vs hybrid: the same objective, views, crops, lead drop and masks; no InfoNCE term.
  # (`config.w_con` is the top-level alias of `config.hybrid.w_con`.)
  assert {k for k in set(h) | set(m) if h.get(k) != m.get(k)} == {"preset", "hybrid.w_con",
                                                                  "w_con"}
  assert (h["hybrid.w_con"], m["hybrid.w_con"], m["w_con"]) == (1.0, 0.0, 0.0)
  # Contrastive: the same views and input; its own objective (no masking, no decoder).
  for key in hybrid.VIEWS:
    assert c[f"contrastive.{key}"] == h[f"hybrid.{key}"], key
  assert {k: v for k, v in c.items() if k.startswith("input.")} == {
      k: v for k, v in h.items() if k.startswith("input.")}
