"""Hybrid MAE + contrastive pretraining and its two ablations on one shared setup (SPEC.md 5).

  python pretrain/main.py --config configs/hybrid.py:variant=S/75 --workdir runs/hybrid_s
  python pretrain/main.py --config configs/hybrid.py:variant=S/75,preset=mae --workdir runs/mae_s
  python pretrain/main.py --config configs/hybrid.py:variant=mu,runlocal --workdir /tmp/hybrid
  python pretrain/main.py --config configs/hybrid.py:encoder=ecg_fm,variant=small --workdir runs/h

Arguments after ':' (comma separated): variant=mu|S/75|B/75|L/75; preset=hybrid (objective
"hybrid": one ST-MEM MAE, two lead-dropped views, InfoNCE between their pooled visible-token
embeddings), mae (ST-MEM alone, objective "mae"), contrastive (the same ViT, mask ratio 0, no
decoder, lead-drop InfoNCE, objective "contrastive"); runlocal and corpus=synthetic|ptbxl250 as in
configs/stmem.py; encoder=st_mem (default) or ecg_fm. With encoder=ecg_fm the masked objective is
ECG-FM's own (wav2vec 2.0 masked-frame prediction) and the presets are configs/ecgfm.py's recipes:
mae -> recipe=wav2vec2, contrastive -> recipe=cmsc, hybrid -> recipe=full (wav2vec 2.0 + CMSC + RLM
in one pass, which is what ECG-FM itself trains). For the ST-MEM encoder every other setting is
shared: the presets differ only in objective, model,
mask_ratio, input.samples (the MAE crops its 9 s window in the pipeline; the view objectives take
two 9 s sub-crops of the 10 s record on device) and vis_every_steps (only the MAE draws).
"""

import ml_collections

from ecgjax.configs import parse_arg, sibling_config

stmem = sibling_config(__file__, "stmem")
ecgfm = sibling_config(__file__, "ecgfm")

PRESETS = ("hybrid", "mae", "contrastive")
ENCODERS = ("st_mem", "ecg_fm")
ECG_FM_RECIPES = {"mae": "wav2vec2", "contrastive": "cmsc", "hybrid": "full"}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The hybrid / ablation config; keys beyond configs/stmem.py are declared here."""
  arg = parse_arg(arg, variant="", preset="hybrid", runlocal=False, corpus="synthetic",
                  encoder="st_mem")
  if arg.preset not in PRESETS:
    raise ValueError(f"preset={arg.preset!r}: known presets are {', '.join(PRESETS)}")
  if arg.encoder not in ENCODERS:
    raise ValueError(f"encoder={arg.encoder!r}: known encoders are {', '.join(ENCODERS)}")
  variant = arg.variant or ("S/75" if arg.encoder == "st_mem" else "small")
  shared = f"variant={variant},corpus={arg.corpus}" + (",runlocal" if arg.runlocal else "")
  if arg.encoder == "ecg_fm":
    c = ecgfm.get_config(f"{shared},recipe={ECG_FM_RECIPES[arg.preset]}")
    c.preset = arg.preset
    return c
  c = stmem.get_config(shared)  # every ST-MEM key, declared and commented there
  c.preset = arg.preset           # which ablation arm this run is (recorded in config.json)

  # Views: built on device from the one crop the pipeline delivers per record.
  c.input.samples = 2500          # 10 s: room for two 9 s sub-crops (MAE preset: 2250, below)
  c.view_samples = 2250           # encoder window per view (30 patches of 75)
  c.view_mode = "two_crops"       # two_crops: own random crop per view; adjacent: CMSC's two
                                  # back-to-back segments (needs input.samples >= 2 x view_samples)
  c.lead_drop_p = 0.5             # RLM: each lead of each view zeroed with this probability
  # Contrastive branch. The loss sees the GLOBAL batch, so negatives come from every device;
  # with grad_accum_steps > 1 they are the global MICRO-batch (batch_size / grad_accum_steps).
  c.temperature = 0.1             # InfoNCE logits = cos / temperature (CMSC: 0.1)
  c.proj_dim = 128                # projection head Dense(width) -> GELU -> Dense(proj_dim)
  c.positives = "record"          # record: the other view only; patient: + same batch["patient"]
  c.contrastive_pass = "visible"  # hybrid: pooled visible tokens of the MAE pass; full: an extra
                                  # unmasked encoder pass for the contrastive branch
  # Hybrid loss: w_mae L_mae + w_con L_con, or Kendall: sum_t exp(-s_t) L_t + s_t, s_t from 0.
  c.weighting = "fixed"           # fixed | uncertainty
  c.w_mae = 1.0                   # weight of the norm-pix MAE loss (fixed weighting)
  c.w_con = 1.0                   # weight of the InfoNCE loss (fixed weighting)

  if arg.preset == "hybrid":
    c.objective = "hybrid"
    c.model = "st_mem"            # full MAE (encoder + decoder), one model for both losses
    c.vis_every_steps = 0         # no reconstruction picture for the view objectives yet
  elif arg.preset == "contrastive":
    c.objective = "contrastive"
    c.model = "st_mem_encoder"    # the same ViT without the decoder
    c.mask_ratio = 0.0            # every patch seen: pooled embedding of all tokens
    c.vis_every_steps = 0
  else:
    c.objective = "mae"
    c.input.samples = 2250        # the MAE's window is its pipeline crop (no views)
  return c
