"""The ST-MEM MAE train step in PyTorch, for a same-sitting ratio against ecgjax's.

Two models. `--official DIR` times the official code itself: DIR is a checkout of
github.com/bakqui/ST-MEM (it needs torch and einops), whose `st_mem_vit_base_dec256d4b` is
built as its pretraining config builds it (2250 samples, patch 75, 12 leads, norm_pix_loss)
and stepped as its engine_pretrain.py steps it (forward, loss.item(), backward, AdamW with
the config's betas (0.9, 0.95) and weight decay 0.01, zero_grad); nothing of that code is
in this repository. Without it, the model is the architecture-faithful torch port the
interop tests load ecgjax weights into (tests/interop_refs.py: the encoder with the
published module layout), sized up, plus the reference's MAE pieces: per-lead random
masking after the patch embedding, SEP tokens and lead embeddings added after masking, a
decoder that rebuilds each lead separately with a mask token, MSE on the hidden patches,
and AdamW. Float32 by default; `--amp` puts the forward pass under bfloat16 autocast (torch
AMP), `--device cuda` runs it on a GPU (fused AdamW there, and the peak device memory in the
JSON). Prints a table and, last, one JSON line with samples_per_s and peak_rss_mib
(whole-process ru_maxrss), like bench/pretrain_step.py.

  python bench/torch_st_mem_step.py --threads 2 --steps 5 [--official PATH/TO/ST-MEM]
  python bench/torch_st_mem_step.py --device cuda --amp --batch 128 --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from tests.interop_refs import STMEMEncoder, _ViTBlock  # noqa: E402

SIZES = {"B/75": dict(width=768, depth=12, heads=12, mlp=3072, dec_width=256, dec_depth=4,
                      dec_heads=4, dec_mlp=1024),
         "mu": dict(width=64, depth=1, heads=1, mlp=256, dec_width=64, dec_depth=1,
                    dec_heads=1, dec_mlp=256)}


class TorchSTMEM(nn.Module):
  """ST-MEM's MAE around the test reference encoder (same tokens, masking and decoder)."""

  def __init__(self, width, depth, heads, mlp, dec_width, dec_depth, dec_heads, dec_mlp,
               patch=75, seq_len=2250, leads=12, mask_ratio=0.75):
    super().__init__()
    self.encoder = STMEMEncoder(width, depth, heads, mlp, patch, seq_len, leads)
    self.n = seq_len // patch
    self.keep = int(self.n * (1 - mask_ratio))
    self.patch = patch
    self.to_decoder_embedding = nn.Linear(width, dec_width)
    self.mask_embedding = nn.Parameter(torch.zeros(1, 1, dec_width))
    self.decoder_pos_embed = nn.Parameter(torch.randn(1, self.n + 2, dec_width))
    self.decoder_blocks = nn.ModuleList(_ViTBlock(dec_width, dec_heads, dec_mlp)
                                        for _ in range(dec_depth))
    self.decoder_norm = nn.LayerNorm(dec_width)
    self.decoder_head = nn.Linear(dec_width, patch)

  def forward(self, x):
    enc = self.encoder
    b, n_leads, _ = x.shape
    tok = enc.to_patch_embedding(x) + enc.pos_embedding[:, 1:-1].unsqueeze(1)
    d = tok.shape[-1]
    noise = torch.rand(b, n_leads, self.n, device=x.device)
    order = noise.argsort(dim=2)
    keep_idx = order[:, :, :self.keep]
    tok = tok.gather(2, keep_idx[..., None].expand(-1, -1, -1, d))
    mask = torch.ones(b, n_leads, self.n, device=x.device)
    mask.scatter_(2, keep_idx, 0.0)
    left = (enc.sep_embedding + enc.pos_embedding[0, 0]).expand(b, n_leads, 1, d)
    right = (enc.sep_embedding + enc.pos_embedding[0, -1]).expand(b, n_leads, 1, d)
    tok = torch.cat([left, tok, right], dim=2)
    tok = tok + torch.stack(list(enc.lead_embeddings))[None, :, None, :]
    tok = tok.reshape(b, n_leads * (self.keep + 2), d)
    for i in range(enc.depth):
      tok = getattr(enc, f"block{i}")(tok)
    latent = enc.norm(tok)
    h = self.to_decoder_embedding(latent).reshape(b, n_leads, self.keep + 2, -1)
    dw = h.shape[-1]
    full = self.mask_embedding.to(h.dtype).expand(b * n_leads, self.n, dw)
    full = full.reshape(b, n_leads, self.n, dw)
    full = full.scatter(2, keep_idx[..., None].expand(-1, -1, -1, dw), h[:, :, 1:-1])
    seq = torch.cat([h[:, :, :1], full, h[:, :, -1:]], dim=2) + self.decoder_pos_embed[:, None]
    seq = seq.reshape(b * n_leads, self.n + 2, dw)
    for blk in self.decoder_blocks:
      seq = blk(seq)
    pred = self.decoder_head(self.decoder_norm(seq))[:, 1:-1].reshape(b, n_leads, self.n, -1)
    target = x.reshape(b, n_leads, self.n, self.patch)
    loss = ((pred - target) ** 2).mean(-1)
    return (loss * mask).sum() / mask.sum()


def _official(path: str, variant: str):
  """The official ST-MEM model and its loss, imported from a checkout at `path`."""
  if variant != "B/75":
    raise SystemExit("--official: only B/75 (st_mem_vit_base_dec256d4b) is timed")
  if not os.path.isfile(os.path.join(path, "models", "st_mem.py")):
    raise SystemExit(f"--official {path}: no models/st_mem.py there (a bakqui/ST-MEM checkout?)")
  sys.path.insert(0, os.path.abspath(path))
  try:
    from models.st_mem import st_mem_vit_base_dec256d4b  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise SystemExit(f"--official {path}: cannot import its model ({e}); it needs einops")
  model = st_mem_vit_base_dec256d4b(seq_len=2250, patch_size=75, num_leads=12,
                                    norm_pix_loss=True).train()
  return model, lambda x: model(x)["loss"]


def main() -> None:
  """Times the torch step and prints the table and the JSON line."""
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--variant", default="B/75", choices=sorted(SIZES))
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--steps", type=int, default=5)
  ap.add_argument("--threads", type=int, default=2)
  ap.add_argument("--official", default=None, metavar="DIR",
                  help="a checkout of github.com/bakqui/ST-MEM: time its own model (B/75)")
  ap.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
  ap.add_argument("--amp", action="store_true",
                  help="bfloat16 autocast (torch AMP) around the forward pass and the loss")
  args = ap.parse_args()
  torch.set_num_threads(args.threads)  # interop_refs sets 1 for the tests
  torch.manual_seed(0)
  device = torch.device(args.device)
  if args.official:
    model, loss_of = _official(args.official, args.variant)
  else:
    model = TorchSTMEM(**SIZES[args.variant]).train()
    loss_of = model
  model.to(device)
  # built after .to(): fused AdamW on a GPU (one kernel over all parameters), as a tuned
  # torch baseline would run it; foreach on a CPU (torch's default there). The official
  # run takes its pretraining config's lr and weight decay.
  opt = torch.optim.AdamW(model.parameters(), lr=1.5e-4 if args.official else 1e-4,
                          weight_decay=0.01 if args.official else 0.05, betas=(0.9, 0.95),
                          **({"fused": True} if device.type == "cuda" else {}))
  x = torch.randn(args.batch, 12, 2250, device=device)

  def sync():
    if device.type == "cuda":
      torch.cuda.synchronize()

  if device.type == "cuda":
    torch.cuda.reset_peak_memory_stats()
  times = []
  for i in range(args.steps + 1):
    sync()
    t0 = time.perf_counter()
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
      loss = loss_of(x)
    loss.item()  # the official engine reads the loss every step (a sync on a GPU)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    sync()
    if i:
      times.append(time.perf_counter() - t0)
  med = statistics.median(times)
  row = {"model": "official st_mem" if args.official else "torch st_mem",
         "variant": args.variant, "batch": args.batch, "device": str(device),
         "amp_bf16": args.amp, "threads": args.threads, "torch": torch.__version__,
         "params": sum(p.numel() for p in model.parameters()),
         "samples_per_s": round(args.batch / med, 3), "median_step_s": round(med, 4),
         "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
         "loss": float(loss.detach())}
  if device.type == "cuda":
    row["device_name"] = torch.cuda.get_device_name(device)
    row["peak_device_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
  width = max(len(k) for k in row)
  for k, v in row.items():
    print(f"{k:<{width}}  {v}")
  print(json.dumps(row), flush=True)


if __name__ == "__main__":
  main()
