"""ECG-FM pretraining: wav2vec 2.0 encoder with the quantised contrastive objective (SPEC.md 2).

  python pretrain/main.py --config configs/ecgfm.py:variant=base --workdir runs/ecgfm
  python pretrain/main.py --config configs/ecgfm.py:variant=mu,runlocal --workdir /tmp/ecgfm

Arguments after ':': variant=mu|small|base, runlocal. The CMSC + random-lead-masking objective
and the hybrid live in configs/hybrid.py.
"""

import ml_collections

from ecgjax.configs import parse_arg, sibling_config

stmem = sibling_config(__file__, "stmem")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ECG-FM wav2vec 2.0 pretraining config; every key is declared here or in stmem.py."""
  arg = parse_arg(arg, variant="base", runlocal=False)
  c = stmem.get_config("variant=mu,runlocal" if arg.runlocal else "variant=mu")
  del c.mask_ratio  # ST-MEM's patch masking; wav2vec 2.0 masks frame spans instead
  c.objective = "wav2vec2"
  c.model = "ecg_fm"
  c.variant = arg.variant
  if not arg.runlocal:
    c.data = "synthetic:20000?seed=0&fs=500&seconds=10"

  # 5 s segments at 500 Hz, per-lead z-score, linear resampling, no filter (156 frames).
  c.input.fs = 500.0
  c.input.samples = 2500
  c.input.bandpass = None
  c.input.standardize = "per_lead"
  c.input.resample_method = "linear"

  # wav2vec 2.0 objective.
  c.mask_prob = 0.65              # span starts per frame (spans may overlap: ~50% covered)
  c.mask_length = 10              # frames per span
  c.min_masks = 2                 # at least this many spans per record
  c.num_negatives = 100           # distractors from the same record's masked frames
  c.logit_temp = 0.1              # cosine similarity / 0.1
  c.diversity_weight = 0.1        # codebook diversity (num_vars - perplexity) / num_vars
  c.feature_pen_weight = 10.0     # mean squared CNN features
  c.gumbel_temperature = (2.0, 0.5, 0.999995)  # start, floor, decay per update

  # Reference recipe: Adam(0.9, 0.98, eps 1e-6), decoupled wd 0.01, constant lr 5e-5 at 1024
  # segments per update (here: base_lr * batch / 256 with a flat cosine floor).
  c.batch_size = 1024
  c.base_lr = 5e-5 * 256 / 1024
  c.min_lr_ratio = 1.0            # constant after warmup, as the reference
  c.warmup_steps = 1000
  c.b2 = 0.98
  c.adam_eps = 1e-6
  if arg.runlocal:
    c.data = "synthetic:2000?seed=0&fs=500&seconds=10"
    c.batch_size = 16
    c.total_steps = 100
    c.warmup_steps = 10
    c.base_lr = 5e-4 * 256 / 16
  c.vis_every_steps = 0           # no reconstruction picture for a contrastive objective
  return c
