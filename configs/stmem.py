"""ST-MEM masked-autoencoder pretraining (SPEC.md section 1).

  python pretrain/main.py --config configs/stmem.py:variant=B/75 --workdir runs/stmem_b
  python pretrain/main.py --config configs/stmem.py:variant=mu,runlocal --workdir /tmp/stmem

Arguments after ':' (comma separated): variant=mu|S/75|B/75|L/75, runlocal (a laptop-size
run of a few minutes on the built-in synthetic data), corpus=synthetic|ptbxl250 (the shared
PTB-XL pretraining array beside the checkout, ../shared/data/ptbxl-pretrain-250hz).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from ecgjax.configs import evaluator, parse_arg

LEADS_12 = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ST-MEM pretraining config; every key is declared here."""
  arg = parse_arg(arg, variant="B/75", runlocal=False, corpus="synthetic")
  c = ml_collections.ConfigDict()
  c.seed = 0                      # params, masking noise and data order all derive from it
  c.objective = "mae"             # ecgjax.objectives registry name
  c.model = "st_mem"              # ecgjax.models registry name (the full MAE)
  c.variant = arg.variant         # mu | S/75 | B/75 | L/75
  c.dtype = "float32"             # compute dtype: float32 or bfloat16 (params stay float32)
  c.mask_ratio = 0.75             # per lead: 23 of 30 patches masked, 7 seen

  # Data: any data spec (FORMAT:PATH?k=v&...); the default is the built-in generator.
  c.data = "synthetic:20000?seed=0&fs=250&seconds=10"
  c.data_workers = 8              # grain worker processes per host (0 = in the main process)
  c.max_bad_fraction = 0.01       # unreadable records are skipped; past this fraction, stop
  c.augment = "none"              # none | st_mem_randaugment (after standardisation, in workers)
  c.input = ml_collections.ConfigDict()  # the input contract, recorded in the export
  c.input.fs = 250.0              # Hz, after FFT resampling
  c.input.samples = 2250          # 9 s random crop = 30 patches of 75
  c.input.leads = tuple(LEADS_12.split(","))
  c.input.bandpass = (0.67, 40.0)  # Butterworth high-pass then low-pass, zero-phase
  c.input.filter_order = 5
  c.input.standardize = "global"  # one mean/std over the whole (12, T) crop
  c.input.resample_method = "fft"
  # How the reference pipelines differ (data/transforms.py Preprocessing; SPEC section 10).
  c.input.notch = placeholder(float)  # mains notch in Hz (ECGFounder 50); None: off
  c.input.notch_q = 30.0
  c.input.baseline_window_s = placeholder(float)  # running median (ECGFounder 0.4 s); None: off
  c.input.bandpass_design = "cascade"  # cascade (ST-MEM) | butter_ba (ECGFounder: one b/a design)
  c.input.baseline_method = "reflect"  # reflect | medfilt (ECGFounder: zero-padded edges)
  c.input.standardize_scope = "window"  # window (after the crop) | record (ECG-FM: before it)
  c.input.standardize_eps = 0.0   # > 0: divide by std + eps (ECGFounder 1e-8)
  c.input.head_s = placeholder(float)  # keep only the first seconds (ECGFounder 10); None: all
  c.input.views = "crops"         # evaluation inputs: crops | segments (ECG-FM: every 5 s)

  # Optimisation: AdamW(0.9, 0.95), lr = base_lr * batch_size / 256, warmup then cosine.
  c.batch_size = 256              # global, over all devices and hosts
  c.total_steps = 100_000
  c.warmup_steps = 5_000
  c.optimizer = "adamw"
  c.base_lr = 1.5e-4
  c.min_lr_ratio = 0.0            # cosine floor as a fraction of the peak
  c.b1 = 0.9
  c.b2 = 0.95
  c.adam_eps = 1e-8
  c.weight_decay = 0.01           # decoupled (AdamW)
  c.weight_decay_scope = "matrices"  # matrices and tables, not biases/norms/vectors | all
  c.grad_clip_norm = 0.0          # 0 = no clipping
  c.grad_accum_steps = 1          # micro-batches per update (batch_size stays global)
  c.param_sharding = "replicated"  # or "fsdp": each array split over the devices

  # Bookkeeping.
  c.log_every_steps = 50
  c.checkpoint_every_steps = 1000
  c.keep_checkpoints = 3
  c.vis_every_steps = 5000        # MAE reconstruction picture in WORKDIR/plots (0 = off)
  c.export_at_end = True          # WORKDIR/export for finetune/ scripts
  # Evaluators during training (ecgjax/eval/evaluators/<type>.py; keys declared there): rows
  # eval/<name>/<key> in metrics.jsonl. The linear probe is off until given labelled data:
  #   --config.evals.probe.train='ptbxl:DIR?folds=1-6'
  #   --config.evals.probe.test='ptbxl:DIR?folds=7-8'
  #   --config.evals.probe.every_steps=1000 (0: only after the last step)
  c.evals = ml_collections.ConfigDict()
  c.evals.probe = evaluator("linear_probe")
  # Continue pretraining a published model: its WHOLE pretraining model (ST-MEM's MAE, ECG-FM's
  # wav2vec 2.0 heads) from a PyTorch checkpoint, every key accounted for (init_from_report.json).
  c.init_from = ""                # path of the .pth / .pt; "" = random init
  c.init_from_format = ""         # st-mem | ecg-fm; "" = read off the checkpoint's keys

  if arg.corpus == "ptbxl250":
    # Already 0.5-40 Hz band-passed and z-scored per lead before it was resampled to 250 Hz.
    # The contract says so, so the export tells probes to bring raw records to the same
    # distribution; re-applying both steps to this data changes it negligibly.
    c.data = "npy:../shared/data/ptbxl-pretrain-250hz/signals.npy?fs=250"
    c.input.bandpass = (0.5, 40.0)
    c.input.standardize = "per_lead"
  elif arg.corpus != "synthetic":
    raise ValueError(f"corpus={arg.corpus!r}: known corpora are synthetic, ptbxl250")

  if arg.runlocal:
    if arg.corpus == "synthetic":
      c.data = "synthetic:4000?seed=0&fs=250&seconds=10"
    c.data_workers = 0
    c.batch_size = 16
    c.total_steps = 300
    c.warmup_steps = 30
    c.base_lr = 0.024             # peak 1.5e-3 at batch 16: tiny models take larger steps
    c.log_every_steps = 25
    c.checkpoint_every_steps = 100
    c.vis_every_steps = 300
  return c
