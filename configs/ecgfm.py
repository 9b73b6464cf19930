"""ECG-FM pretraining: wav2vec 2.0 + CMSC + random lead masking on its encoder (SPEC.md 2).

  python pretrain/main.py --config configs/ecgfm.py:variant=base --workdir runs/ecgfm
  python pretrain/main.py --config configs/ecgfm.py:variant=mu,runlocal --workdir /tmp/ecgfm

Arguments after ':' (comma separated): variant=mu|small|base; recipe=full (ECG-FM's published
recipe: each 10 s record -> two adjacent 5 s segments, each span-masked and lead-dropped with
p = 0.5, wav2vec 2.0 loss on both plus CMSC between them; objective "wav2vec2"), wav2vec2 (the
same segments, no lead dropping, no CMSC), cmsc (CMSC + RLM alone, no masking or quantiser;
objective "contrastive" on the bare encoder); corpus=synthetic|ptbxl250; runlocal.
configs/hybrid.py:encoder=ecg_fm maps its mae / contrastive / hybrid presets onto these recipes.
"""

import ml_collections

from ecgjax.configs import parse_arg, sibling_config

stmem = sibling_config(__file__, "stmem")

RECIPES = ("full", "wav2vec2", "cmsc")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ECG-FM pretraining config; every key is declared here or in stmem.py."""
  arg = parse_arg(arg, variant="base", runlocal=False, recipe="full", corpus="synthetic")
  if arg.recipe not in RECIPES:
    raise ValueError(f"recipe={arg.recipe!r}: known recipes are {', '.join(RECIPES)}")
  c = stmem.get_config(f"variant=mu,corpus={arg.corpus}" + (",runlocal" if arg.runlocal else ""))
  del c.mask_ratio  # ST-MEM's patch masking; wav2vec 2.0 masks frame spans instead
  c.recipe = arg.recipe           # recorded in config.json
  c.objective = "contrastive" if arg.recipe == "cmsc" else "wav2vec2"
  c.model = "ecg_fm_encoder" if arg.recipe == "cmsc" else "ecg_fm"
  c.variant = arg.variant
  if arg.corpus == "synthetic":
    c.data = "synthetic:20000?seed=0&fs=500&seconds=10"

  # 10 s at 500 Hz (linear resampling), per-lead z-score: two 5 s segments of 2500 samples
  # (156 frames each). No filter on raw data; the shared corpus was band-passed before it was
  # stored, and the contract keeps saying so (stmem.py's corpus preset).
  c.input.fs = 500.0
  c.input.samples = 5000
  if arg.corpus == "synthetic":
    c.input.bandpass = None
  c.input.standardize = "per_lead"
  c.input.standardize_scope = "record"  # fairseq-signals z-scores the whole record, then cuts
  c.input.views = "segments"      # evaluation: every 5 s segment of a record, averaged
  c.input.resample_method = "linear"    # fairseq-signals' interpolation grid

  # Segments and random lead masking (RLM), shared by every recipe.
  c.views = 2                     # wav2vec2: two adjacent halves of the window, own masks each
  c.view_samples = 2500           # contrastive recipe: encoder window per segment
  c.view_mode = "adjacent"        # contrastive recipe: CMSC's back-to-back segments
  c.lead_drop_p = 0.0 if arg.recipe == "wav2vec2" else 0.5
  # CMSC. The loss sees the GLOBAL batch, so negatives come from every device (the reference
  # used its own GPU only); with grad_accum_steps > 1 they are the global MICRO-batch.
  c.cmsc_weight = 1.0 if arg.recipe == "full" else 0.0
  c.temperature = 0.1             # CMSC logits = cos / 0.1
  c.positives = "patient"         # every pair of segments of one patient (batch["patient"])
  c.proj_dim = 0                  # contrastive recipe: compare pooled outputs directly

  # wav2vec 2.0 objective.
  c.mask_prob = 0.65              # span starts per frame (spans may overlap: ~50% covered)
  c.mask_length = 10              # frames per span
  c.min_masks = 2                 # at least this many spans per record
  c.num_negatives = 100           # distractors from the same segment's masked frames
  c.logit_temp = 0.1              # cosine similarity / 0.1
  c.diversity_weight = 0.1        # codebook diversity (num_vars - perplexity) / num_vars
  c.feature_pen_weight = 10.0     # mean squared CNN features
  c.gumbel_temperature = (2.0, 0.5, 0.999995)  # start, floor, decay per update

  # Reference recipe: Adam(0.9, 0.98, eps 1e-6), decoupled wd 0.01, constant lr 5e-5 at 1024
  # segments per update, i.e. 512 records of two segments (here: base_lr * batch / 256 with
  # a flat cosine floor).
  c.batch_size = 512
  c.base_lr = 5e-5 * 256 / 512
  c.min_lr_ratio = 1.0            # constant after warmup, as the reference
  c.warmup_steps = 1000
  c.b2 = 0.98
  c.adam_eps = 1e-6
  c.weight_decay_scope = "all"    # fairseq's Adam decays EVERY parameter (biases, norms too)
  if arg.runlocal:
    if arg.corpus == "synthetic":
      c.data = "synthetic:2000?seed=0&fs=500&seconds=10"
    c.batch_size = 16
    c.total_steps = 100
    c.warmup_steps = 10
    c.base_lr = 5e-4 * 256 / 16
  c.vis_every_steps = 0           # no reconstruction picture for a contrastive objective
  return c
