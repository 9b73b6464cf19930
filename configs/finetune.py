"""Supervised fine-tuning (SPEC.md sections 3, 4, 6), run by finetune/finetune.py.

  python finetune/finetune.py --config configs/finetune.py:backbone=net1d --workdir runs/ft \
      --config.data='ptbxl:../shared/data/ptbxl'
  python finetune/finetune.py --config configs/finetune.py:backbone=net1d,runlocal --workdir /tmp/ft
  python finetune/finetune.py --config configs/finetune.py:backbone=export --workdir runs/ft_stmem \
      --config.export=runs/demo/stmem/export --config.data='ptbxl:../shared/data/ptbxl'

Arguments after ':' (comma separated): backbone=net1d|resnet1d|resnet2d|export; variant= (net1d:
ecgfounder|8m|mu, default 8m; resnet1d: resnet1d18|34|50|mu, default resnet1d50; resnet2d:
resnet2d50_sa|resnet2d50|mu); fs= the input rate in Hz (default 500 as ECGFounder; 100 reads
PTB-XL's records100 for CPU runs); runlocal (a two-minute CPU run on synthetic data);
input=signal|image (image: EIANet on printouts, backbone=resnet2d, --config.data=image:DIR);
recipe= a published fine-tune recipe on an export: st_mem (RandAugment 2 of 8 ops at p 0.5 on the
signal, AdamW lr 1e-3 x batch/256, wd 0.05, no layer decay, SPEC section 1) | ecg_fm (CNN frozen,
sum / nonzero-count pooling, BCE with balanced pos_weight, SPEC section 2).
"""

import ml_collections
from ml_collections.config_dict import placeholder

from ecgjax import configs
from ecgjax.configs import parse_arg
from ecgjax.data import images

LEADS_12 = "I,II,III,aVR,aVL,aVF,V1,V2,V3,V4,V5,V6"
BACKBONES = {"net1d": "8m", "resnet1d": "resnet1d50", "resnet2d": "resnet2d50_sa", "export": ""}
RECIPES = ("", "st_mem", "ecg_fm")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The fine-tuning config."""
  arg = parse_arg(arg, backbone="net1d", variant="", fs=500.0, runlocal=False, recipe="",
                  input="signal")
  if arg.input not in ("signal", "image"):
    raise ValueError(f"input={arg.input!r}: known inputs are signal, image")
  if arg.input == "image" and arg.backbone not in ("resnet2d", "export"):
    raise ValueError(f"input=image trains a 2-D backbone: use backbone=resnet2d (or export, "
                     f"an image model's export), not {arg.backbone!r}")
  if arg.backbone not in BACKBONES:
    raise ValueError(f"backbone={arg.backbone!r}: known backbones are {', '.join(BACKBONES)}")
  if arg.recipe not in RECIPES:
    raise ValueError(f"recipe={arg.recipe!r}: known recipes are {', '.join(RECIPES[1:])}")
  c = ml_collections.ConfigDict()
  c.seed = 0                      # params, dropout, data order and augmentation derive from it
  # The objective's own keys (task, loss, pos_weight, focal_gamma, focal_alpha, weighting,
  # pcgrad, layer_decay, head_dropout, freeze) are config.supervised.*, declared with their
  # defaults in ecgjax/objectives/supervised.py; each also answers as config.<key>.
  # Backbone (config.model): a Net1D/ResNet by name (net1d | resnet1d | resnet2d), or export
  # (a pretrained encoder, config.export != "", with a new head).
  configs.set_objective(c, "supervised", model=arg.backbone)
  c.variant = arg.variant or BACKBONES[arg.backbone]
  c.export = ""                   # WORKDIR/export of a pretraining run (ST-MEM, ECG-FM, hybrid)
  c.mode = "full"                 # full: train all | linear_probe: only the head | scratch:
                                  # random init (of the export's architecture, too)
  c.dtype = "float32"             # compute dtype: float32 or bfloat16 (params stay float32)
  c.remat = "none"                # none | block | dots_saveable | full: recompute in backward
  c.use_bn = True                 # Net1D BatchNorm (ECGFounder: off; AnyECG-CCTA: on)
  c.backbone_dropout = 0.0        # Net1D dropout (AnyECG-CCTA: 0.5); 0 = off
  c.spatial_attention = placeholder(bool)  # ResNets: EIANet's attention gates on/off
                                  # (False: the paper's ResNet-50 baseline); None: the variant's
  c.attention_residual = False    # gates as x * (1 + a) instead of x * a (models/resnet.py)
  c.pooling = ""                  # an export encoder's pooling; "" = its own. ECG-FM: mean |
                                  # nonzero_mean (sum over time / nonzero count, its fine-tune) |
                                  # feature_nonzero_mean (its scripts/embs.py)

  c.labels = ""                   # comma list of the data's labels to learn; "" = all

  # Data: any data spec; records are prepared once and held in memory.
  c.data = "synthetic:600?seed=0&fs=500&seconds=10"
  c.external = ""                 # data spec of an external set: fold-ensemble predictions
  c.data_workers = 0              # grain worker processes (0: threads in this process)
  c.max_bad_fraction = 0.01       # unreadable records are skipped; past this fraction, stop
  c.augment = "scheduled"         # none | scheduled (AnyECG-CCTA: roll, scale, noise, occlusion
                                  # at strength alpha(e) = 0.5 + 0.5 cos(pi e / E)) |
                                  # st_mem_randaugment (ST-MEM's fine-tune: 2 of 8 ops, p 0.5) |
                                  # page_jitter (printouts: shift, scale, rotate the page)
  c.paired = True                 # each batch holds every record AND its augmented copy
  c.input = ml_collections.ConfigDict()  # input contract (an export brings its own)
  c.input.fs = arg.fs
  c.input.samples = int(round(10 * arg.fs))  # 10 s
  c.input.leads = tuple(LEADS_12.split(","))
  c.input.bandpass = (0.67, 40.0)  # the band ECGFounder uses, Butterworth, zero-phase
  c.input.filter_order = 4
  c.input.standardize = "per_lead"  # AnyECG-CCTA: per-lead z-score
  c.input.resample_method = "poly"
  c.input.notch = 50.0 if arg.fs > 100 else None  # mains notch (needs fs > 100)
  c.input.notch_q = 30.0
  c.input.baseline_window_s = 0.4  # running-median baseline removal
  # How the reference pipelines differ (data/transforms.py Preprocessing; SPEC section 10). The
  # defaults here are AnyECG-CCTA's; ECGFounder's exact pipeline: data.transforms.preset(
  # "ecgfounder") = butter_ba, medfilt, record scope, eps 1e-8, head_s 10, linear_span.
  c.input.bandpass_design = "cascade"  # cascade (high-pass then low-pass) | butter_ba (one b/a)
  c.input.baseline_method = "reflect"  # reflect (mirrored edges) | medfilt (zero-padded)
  c.input.standardize_scope = "window"  # window (after the crop) | record (before it)
  c.input.standardize_eps = 0.0   # > 0: divide by std + eps
  c.input.head_s = placeholder(float)  # keep only the first seconds; None: all
  c.input.views = "crops"         # evaluation inputs: crops | segments
  # Images (input=image): ECG printouts (data image:DIR) and EIANet's image contract,
  # ecgjax/data/images.py ImagePreprocessing (size, aspect pad | stretch, each stage on/off).
  c.modality = arg.input          # signal | image
  c.image = ml_collections.ConfigDict({k: v for k, v in images.preset("eianet").to_dict().items()
                                      if k != "modality"})

  # Splits: grouped stratified CV by patient, each fold's training side holding out a
  # validation part that picks the checkpoint; or the data's folds.
  c.split = "groupcv"             # groupcv | folds
  c.cv_folds = 5
  c.val_fraction = 0.2            # of each training side's patients, for checkpoint selection
  c.split_seed = 0                # the CV partition (independent of the training seed)
  c.test_folds = ""               # split=folds: the data's folds to test on, e.g. "8"
  c.val_folds = ""                # split=folds: validation folds, e.g. "7"; "" = val_fraction

  # Optimisation: AdamW, lr = base_lr * batch_size / 256, warmup then cosine to a floor.
  c.epochs = 30
  c.batch_size = 64               # ORIGINAL records per step (paired copies double the rows)
  c.base_lr = 1e-3
  c.warmup_fraction = 0.1         # AnyECG-CCTA: 10% of the steps
  c.min_lr_ratio = 0.01           # cosine floor: 1% of the peak
  c.total_steps = 0               # derived per split: epochs x ceil(train records / batch_size)
  c.warmup_steps = 0              # derived per split: warmup_fraction x total_steps
  c.optimizer = "adamw"
  c.b1 = 0.9
  c.b2 = 0.999
  c.adam_eps = 1e-8
  c.weight_decay = 0.01           # decoupled (AdamW)
  c.weight_decay_scope = "matrices"  # matrices and kernels, not biases/norms | all
  c.grad_clip_norm = 0.0          # 0 = no clipping
  c.grad_accum_steps = 1          # micro-batches per update
  c.param_sharding = "replicated"  # or "fsdp"

  # Evaluation and bookkeeping.
  c.eval_batch_size = 64
  c.eval_crops = 0                # crops averaged per record; 0 = the model's reference (ST-MEM 3)
  c.bootstrap = 1000              # resamples for the 95% CIs of the final report
  c.log_every_steps = 10
  c.keep_checkpoints = 1          # rolling checkpoints per split (the best is kept apart)

  c.recipe = arg.recipe           # recorded in config.json; "" = the keys as set here
  if arg.recipe == "st_mem":
    c.augment = "st_mem_randaugment"
    c.paired = False              # ST-MEM trains on the augmented records alone
    c.base_lr = 1e-3
    c.weight_decay = 0.05
    c.layer_decay = 0.0
  elif arg.recipe == "ecg_fm":
    c.freeze = "cnn"
    c.pooling = "nonzero_mean"
    c.loss = "bce"
    c.pos_weight = "balanced"
    c.augment = "none"

  if arg.input == "image":
    # EIANet (SPEC section 6): ResNet-50 + spatial attention on preprocessed printouts,
    # binary recall loss, AdamW at lr 2e-5 (base_lr * batch_size / 256), no augmentation.
    c.data = ""                   # image:DIR (python -m ecgjax.images render writes one)
    c.loss = "brl"
    c.base_lr = 2e-5 * 256 / c.batch_size
    c.augment = "none"
    c.paired = False
  if arg.runlocal and arg.input == "image":
    # A small EIANet on the printouts given in --config.data, at a quarter of the size.
    c.variant = arg.variant or "mu"
    c.image.height, c.image.width = 128, 181
    c.cv_folds, c.epochs, c.batch_size, c.eval_batch_size = 2, 3, 16, 32
    c.base_lr = 1e-3 * 256 / c.batch_size  # a tiny network from scratch takes larger steps
    # Trained from scratch at this size the paper's multiplicative gates shut (README, ECG
    # printouts: every such arm at chance); as x * (1 + a) they learn.
    c.attention_residual = True
    c.bootstrap, c.log_every_steps = 200, 2
  elif arg.runlocal:
    c.data = f"synthetic:120?seed=0&fs={int(arg.fs)}&seconds=10"
    c.variant = arg.variant or {"net1d": "mu", "resnet1d": "mu", "resnet2d": "mu",
                                "export": ""}[arg.backbone]
    c.cv_folds = 2
    c.epochs = 2
    c.batch_size = 16
    c.eval_batch_size = 32
    c.bootstrap = 200
    c.log_every_steps = 2
  return c
