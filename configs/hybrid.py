"""Hybrid MAE + contrastive pretraining and its two ablations on one shared setup (SPEC.md 5).

  python pretrain/main.py --config configs/hybrid.py:variant=S/75 --workdir runs/hybrid_s
  python pretrain/main.py --config configs/hybrid.py:variant=S/75,preset=mae --workdir runs/mae_s
  python pretrain/main.py --config configs/hybrid.py:variant=mu,runlocal --workdir /tmp/hybrid
  python pretrain/main.py --config configs/hybrid.py:encoder=ecg_fm,variant=small --workdir runs/h

Arguments after ':' (comma separated): variant=mu|S/75|B/75|L/75; preset=hybrid (objective
"hybrid": one ST-MEM MAE, two lead-dropped views, InfoNCE between their pooled visible-token
embeddings), mae (the SAME objective with w_con=0: the same two views per record, the same crops,
lead drops and patch masks, the MAE loss alone, so the ablation compares objectives and nothing
else; ST-MEM's own one-view recipe is configs/stmem.py), contrastive (the same ViT, mask ratio 0,
no decoder, the same lead-drop views, InfoNCE alone, objective "contrastive"); runlocal and
corpus=synthetic|ptbxl250 as in configs/stmem.py; encoder=st_mem (default) or ecg_fm. With
encoder=ecg_fm the masked objective is ECG-FM's own (wav2vec 2.0 masked-frame prediction) and the
presets are configs/ecgfm.py's recipes: mae -> recipe=wav2vec2, contrastive -> recipe=cmsc, hybrid
-> recipe=full (wav2vec 2.0 + CMSC + RLM in one pass, which is what ECG-FM itself trains). For the
ST-MEM encoder every other setting is shared, the input (the pipeline's 10 s crop, two 9 s
sub-crops on device) included: mae and hybrid differ in config.hybrid.w_con alone, contrastive in
objective and model (`config.contrastive`, with equal values for the keys it shares).
"""

import ml_collections

from ecgjax import configs

ecgfm = configs.sibling_config(__file__, "ecgfm")  # its recipes ARE the ECG-FM arms

PRESETS = ("hybrid", "mae", "contrastive")
ENCODERS = ("st_mem", "ecg_fm")
ECG_FM_RECIPES = {"mae": "wav2vec2", "contrastive": "cmsc", "hybrid": "full"}
# The one shared setup of the ST-MEM arms: each arm's objective group takes the keys it has.
VIEWS = dict(view_samples=2250, view_mode="two_crops", lead_drop_p=0.5, temperature=0.1,
             proj_dim=128, positives="record")
MASK_RATIO = 0.75


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The hybrid / ablation config."""
  arg = configs.parse_arg(arg, variant="", preset="hybrid", runlocal=False, corpus="synthetic",
                          encoder="st_mem")
  if arg.preset not in PRESETS:
    raise ValueError(f"preset={arg.preset!r}: known presets are {', '.join(PRESETS)}")
  if arg.encoder not in ENCODERS:
    raise ValueError(f"encoder={arg.encoder!r}: known encoders are {', '.join(ENCODERS)}")
  variant = arg.variant or ("S/75" if arg.encoder == "st_mem" else "small")
  if arg.encoder == "ecg_fm":
    c = ecgfm.get_config(f"variant={variant},corpus={arg.corpus},recipe="
                         f"{ECG_FM_RECIPES[arg.preset]}" + (",runlocal" if arg.runlocal else ""))
    c.preset = arg.preset
    return c
  c = configs.pretraining(variant)
  c.preset = arg.preset           # which ablation arm this run is (recorded in config.json)
  if arg.preset in ("hybrid", "mae"):
    # One full MAE (encoder + decoder): the MAE on each view's masked patches, and for the
    # hybrid InfoNCE between the views' pooled visible tokens (the global batch's negatives).
    # The MAE arm keeps every view, crop and mask of the hybrid and drops only the InfoNCE
    # term, so its difference from the hybrid is the objective alone.
    configs.set_objective(c, "hybrid", model="st_mem", mask_ratio=MASK_RATIO,
                          w_con=1.0 if arg.preset == "hybrid" else 0.0, **VIEWS)
  else:
    # The same ViT without the decoder; every patch seen (no masking).
    configs.set_objective(c, "contrastive", model="st_mem_encoder", **VIEWS)
  # Views are built on device from the one 10 s crop the pipeline delivers per record (room for
  # two 9 s sub-crops).
  c.input = configs.input_contract("st_mem", samples=2500)
  configs.use_corpus(c, arg.corpus)
  if arg.runlocal:
    configs.runlocal(c, batch_size=16, total_steps=300, warmup_steps=30, base_lr=0.024,
                     vis_every_steps=300)
    if arg.corpus == "synthetic":
      c.data = "synthetic:4000?seed=0&fs=250&seconds=10"
  c.vis_every_steps = 0           # no reconstruction picture for the view objectives yet
  return c
