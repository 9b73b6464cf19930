"""ECG-FM pretraining: wav2vec 2.0 + CMSC + random lead masking on its encoder (SPEC.md 2).

  python pretrain/main.py --config configs/ecgfm.py:variant=base --workdir runs/ecgfm
  python pretrain/main.py --config configs/ecgfm.py:variant=mu,runlocal --workdir /tmp/ecgfm

Arguments after ':' (comma separated): variant=mu|small|base; recipe=full (ECG-FM's published
recipe: each 10 s record -> two adjacent 5 s segments, each span-masked and lead-dropped with
p = 0.5, wav2vec 2.0 loss on both plus CMSC between them; objective "wav2vec2"), wav2vec2 (the
same segments, no lead dropping, no CMSC), cmsc (CMSC + RLM alone, no masking or quantiser;
objective "contrastive" on the bare encoder); corpus=synthetic|ptbxl250; runlocal.
configs/hybrid.py:encoder=ecg_fm maps its mae / contrastive / hybrid presets onto these recipes.
The objective's keys are `config.wav2vec2.*` (recipes full, wav2vec2; declared in
ecgjax/objectives/wav2vec2.py) or `config.contrastive.*` (recipe cmsc), each also under its
old flat name (`config.mask_prob`); the common keys are ecgjax/configs.py `pretraining`'s.
"""

import ml_collections

from ecgjax import configs

RECIPES = ("full", "wav2vec2", "cmsc")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ECG-FM pretraining config."""
  arg = configs.parse_arg(arg, variant="base", runlocal=False, recipe="full", corpus="synthetic")
  if arg.recipe not in RECIPES:
    raise ValueError(f"recipe={arg.recipe!r}: known recipes are {', '.join(RECIPES)}")
  c = configs.pretraining(arg.variant)
  c.recipe = arg.recipe           # recorded in config.json
  lead_drop_p = 0.0 if arg.recipe == "wav2vec2" else 0.5  # random lead masking (RLM)
  if arg.recipe == "cmsc":
    # CMSC + RLM on the bare encoder: two back-to-back 5 s segments, patient positives, the
    # time-averaged outputs compared directly. The loss sees the GLOBAL batch, so negatives come
    # from every device (the reference used its own GPU only).
    configs.set_objective(c, "contrastive", model="ecg_fm_encoder", view_samples=2500,
                          view_mode="adjacent", lead_drop_p=lead_drop_p, temperature=0.1,
                          positives="patient", proj_dim=0)
  else:
    # wav2vec 2.0 on each of the two adjacent halves of the window (own span masks each), plus
    # CMSC between them (weight 1) in the full recipe. Span masking, negatives, codebook
    # diversity and the Gumbel schedule keep the reference's values (wav2vec2.py DEFAULTS).
    configs.set_objective(c, "wav2vec2", model="ecg_fm", views=2, lead_drop_p=lead_drop_p,
                          cmsc_weight=1.0 if arg.recipe == "full" else 0.0,
                          positives="patient")

  # 10 s at 500 Hz (linear resampling), per-lead z-score of the whole record, then two 5 s
  # segments of 2500 samples (156 frames each); evaluation averages every 5 s segment.
  c.input = configs.input_contract("ecg_fm", samples=5000)
  c.data = "synthetic:20000?seed=0&fs=500&seconds=10"
  # The shared corpus was band-passed before it was stored, and the contract keeps saying so.
  configs.use_corpus(c, arg.corpus)

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
  c.vis_every_steps = 0           # no reconstruction picture for these objectives
  if arg.runlocal:
    configs.runlocal(c, batch_size=16, total_steps=100, warmup_steps=10,
                     base_lr=5e-4 * 256 / 16)
    if arg.corpus == "synthetic":
      c.data = "synthetic:2000?seed=0&fs=500&seconds=10"
  return c
