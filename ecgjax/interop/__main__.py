"""`python -m ecgjax.interop convert|export`: published PyTorch checkpoints in, and back out.

`convert --from st-mem|ecgfounder|ecg-fm|torchvision-resnet50 CKPT OUT` writes an ordinary ecgjax
export (what `finetune/embed.py --export` and `finetune/probe.py --export` take) and prints the
key report; exit status 2 (and no export written) when any encoder parameter would stay at its
random init, or any key is unexpected or mis-shaped.

`export --to st-mem|ecgfounder|ecg-fm EXPORT OUT` writes what the original code loads (a file
`torch.load(weights_only=True)` reads), checked to read back to the export's parameters exactly.
"""

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(prog="python -m ecgjax.interop",
                              description="Import published PyTorch ECG checkpoints.")
  sub = p.add_subparsers(dest="command", required=True)
  c = sub.add_parser("convert", help="convert a checkpoint into an ecgjax export",
                     description="Convert a published PyTorch checkpoint into an ecgjax export "
                     "(reads it with torch.load(weights_only=True); needs ecgjax[torch]).")
  c.add_argument("--from", dest="source", required=True,
                 choices=("st-mem", "ecgfounder", "ecg-fm", "torchvision-resnet50"),
                 help="st-mem: encoder.pth or the full MAE .pth; ecgfounder: "
                 "12_lead_ECGFounder.pth / 1_lead_ECGFounder.pth; ecg-fm: a fairseq-signals "
                 ".pt (pretrained or fine-tuned); torchvision-resnet50: a torchvision-layout "
                 "ResNet state dict (e.g. ImageNet resnet50-*.pth) as EIANet's image encoder")
  c.add_argument("checkpoint", help="the PyTorch checkpoint file")
  c.add_argument("out_dir", help="export directory to write (replaced if it exists)")
  c.add_argument("--variant", default=None,
                 help="model size (st-mem: B/75, S/75, L/75; ecgfounder: ecgfounder, 8m; "
                 "ecg-fm: base, small; torchvision-resnet50: resnet2d50, resnet2d18); default: "
                 "read off the checkpoint's shapes")
  c.add_argument("--allow-missing", action="append", default=[], metavar="PATTERN",
                 help="regex over checkpoint keys / param paths allowed to stay at their "
                 "random init (repeatable); without it any missing key fails")
  c.add_argument("--ignore-keys", action="append", default=[], metavar="PATTERN",
                 help="regex over checkpoint keys to drop before mapping (repeatable)")
  c.add_argument("--leads", default=None,
                 help="comma-separated input leads (default: the 12 standard leads, lead I "
                 "for a 1-lead model)")
  c.add_argument("--channels", type=int, choices=(1, 3), default=1,
                 help="image models: 1 (gray/binary printouts; the RGB filters of the first "
                 "convolution are summed) or 3 (RGB pictures, no preprocessing stages)")
  c.add_argument("--no-attention", action="store_true",
                 help="image models: without EIANet's spatial-attention gates (the paper's "
                 "ResNet-50 baseline); by default they are added at their random init")
  c.add_argument("--dry-run", action="store_true",
                 help="check and print the report, write nothing")
  e = sub.add_parser("export", help="write an ecgjax export as the original code's checkpoint",
                     description="Write an ecgjax encoder export as the PyTorch file the "
                     "original code loads with strict=True (needs ecgjax[torch]).")
  e.add_argument("--to", dest="target", required=True, choices=("st-mem", "ecgfounder",
                                                                 "ecg-fm"),
                 help="st-mem: the encoder state dict (ST_MEM_ViT, no head); ecgfounder: "
                 "{'state_dict': ...} of Net1D; ecg-fm: a fairseq-signals fine-tuning "
                 "classifier checkpoint {'cfg', 'model', ...}")
  e.add_argument("export", help="the ecgjax export directory (or a run's WORKDIR/export)")
  e.add_argument("out", help="the .pth / .pt file to write")
  e.add_argument("--num-labels", type=int, default=None,
                 help="outputs of the classifier head the target has and the export lacks "
                 "(ecg-fm's proj, Net1D's dense): added at zero, to be fine-tuned there")
  e.add_argument("--encoder-prefix", default="encoder.w2v_model.",
                 choices=("encoder.w2v_model.", "encoder."),
                 help="ecg-fm: where the classifier keeps its encoder (ECG-FM's released "
                 "checkpoints: encoder.w2v_model.; fairseq-signals' ecg_transformer_"
                 "classifier: encoder.)")
  return p


def _export(args: argparse.Namespace) -> int:
  from ecgjax.interop import to_torch  # pylint: disable=g-import-not-at-top
  try:
    result = to_torch.write(args.export, args.target, args.out, num_labels=args.num_labels,
                            prefix=args.encoder_prefix)
  except (ImportError, ValueError, OSError) as e:  # ExportError / ExportToTorchError: ValueError
    print(f"python -m ecgjax.interop export: error: {' '.join(str(e).split())}",
          file=sys.stderr)
    return 2
  print(result.summary())
  return 0


def main(argv: list[str] | None = None) -> int:
  """CLI entry point; returns the exit status."""
  args = _parser().parse_args(argv)
  if args.command == "export":
    return _export(args)
  from ecgjax.interop import conversion  # pylint: disable=g-import-not-at-top
  leads = tuple(x.strip() for x in args.leads.split(",")) if args.leads else None
  try:
    conv = conversion.convert(args.source, args.checkpoint,
                              None if args.dry_run else args.out_dir, variant=args.variant,
                              allow_missing=args.allow_missing, ignore_keys=args.ignore_keys,
                              leads=leads, channels=args.channels,
                              spatial_attention=not args.no_attention)
  except conversion.ConversionError as e:
    print(e.report.summary(), file=sys.stderr)
    return 2
  except (ImportError, ValueError, OSError) as e:  # CheckpointError is a ValueError
    print(f"python -m ecgjax.interop: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  print(conv.report.summary())
  pp = conv.contract
  if hasattr(pp, "leads"):
    print(f"input contract: {len(pp.leads)} leads ({','.join(pp.leads)}), {pp.fs:g} Hz x "
          f"{pp.samples} samples, band-pass {pp.bandpass}, notch {pp.notch}, "
          f"baseline {pp.baseline_window_s}, standardise {pp.standardize}")
  else:
    stages = [k for k in ("threshold", "components", "opening", "blur", "grayscale",
                          "equalize", "binarize") if getattr(pp, k)]
    print(f"input contract: {pp.channels}-channel images, {pp.height}x{pp.width} "
          f"({pp.aspect}), stages {', '.join(stages) or 'none'} (fine-tuning's "
          "config.image sets the size)")
  if conv.export_dir is None:
    print("dry run: nothing written")
  else:
    print(f"wrote export to {conv.export_dir} (embedding dim {conv.encoder['embedding']['dim']})")
  return 0


if __name__ == "__main__":
  sys.exit(main())
