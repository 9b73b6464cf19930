"""Tiny PyTorch reference models written from SPEC.md (sections 1-3), with the published key names.

Our own code, from the spec's text: each module's attribute names give the state-dict keys of
SPEC.md section 8, so the state dicts they produce look like the published checkpoints. Import
this only after `pytest.importorskip("torch")`.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from tests.helpers import rel_err

torch.set_num_threads(1)  # the test machine has two shared cores


def randomize(module: nn.Module, seed: int, scale: float = 0.1) -> nn.Module:
  """Perturbs every parameter, so LayerNorm/GroupNorm affines and biases are not 1 / 0."""
  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in module.parameters():
      p.add_(scale * torch.randn(p.shape, generator=g))
  return module.eval()


def numpy_state(module: nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
  """state_dict as float32 NumPy arrays, keys optionally prefixed."""
  return {prefix + k: v.detach().numpy().copy() for k, v in module.state_dict().items()}


def capture(module: nn.Module, names: list[str]) -> dict[str, list[torch.Tensor]]:
  """Forward hooks recording every output of the named submodules (a list per call)."""
  out: dict[str, list[torch.Tensor]] = {n: [] for n in names}
  subs = dict(module.named_modules())
  for n in names:
    subs[n].register_forward_hook(lambda _m, _i, o, n=n: out[n].append(o.detach()))
  return out


def layer_errors(intermediates: dict, captured: dict[str, list[torch.Tensor]],
                 pairs: dict[str, str], channels_first: tuple[str, ...] = ()
                 ) -> dict[str, float]:
  """Relative error of each Flax submodule's outputs (capture_intermediates) against the
  outputs of the torch module paired with it; torch (B, C, T) outputs of the names starting
  with `channels_first` are compared as (B, T, C) (other shapes as they are)."""
  errors = {}
  for flax_name, torch_name in pairs.items():
    node = intermediates
    for part in flax_name.split("/"):
      node = node[part]
    outs, refs = node["__call__"], [t.numpy() for t in captured[torch_name]]
    assert len(outs) == len(refs), f"{flax_name} ran {len(outs)} times, torch {len(refs)}"
    if flax_name.startswith(channels_first) and channels_first:
      refs = [t.transpose(0, 2, 1) if t.ndim == 3 else t for t in refs]
    errors[flax_name] = max(rel_err(o, t) for o, t in zip(outs, refs))
  return errors


# ---------------------------------------------------------------------------------- ST-MEM


class _Patchify(nn.Module):
  """(B, leads, T) -> (B, leads, T / p, p): index 0 of to_patch_embedding, no parameters."""

  def __init__(self, patch: int):
    super().__init__()
    self.patch = patch

  def forward(self, x):
    b, c, t = x.shape
    return x.reshape(b, c, t // self.patch, self.patch)


class _PreNorm(nn.Module):
  def __init__(self, dim: int, fn: nn.Module):
    super().__init__()
    self.norm, self.fn = nn.LayerNorm(dim), fn

  def forward(self, x):
    return self.fn(self.norm(x))


class _FusedAttention(nn.Module):
  """Fused qkv Linear (out axis (3, heads, 64)), softmax(q k^T / 8) v, output Linear."""

  def __init__(self, dim: int, heads: int, head_dim: int = 64):
    super().__init__()
    self.heads, self.head_dim = heads, head_dim
    self.to_qkv = nn.Linear(dim, 3 * heads * head_dim)
    self.to_out = nn.Sequential(nn.Linear(heads * head_dim, dim), nn.Dropout(0.0))

  def forward(self, x):
    b, n, _ = x.shape
    q, k, v = (t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)
               for t in self.to_qkv(x).chunk(3, dim=-1))
    attn = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, dim=-1)
    return self.to_out((attn @ v).transpose(1, 2).reshape(b, n, -1))


class _FeedForward(nn.Module):
  def __init__(self, dim: int, hidden: int):
    super().__init__()
    self.net = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(0.0),
                             nn.Linear(hidden, dim), nn.Dropout(0.0))

  def forward(self, x):
    return self.net(x)


class _ViTBlock(nn.Module):
  def __init__(self, dim: int, heads: int, mlp: int):
    super().__init__()
    self.attn = _PreNorm(dim, _FusedAttention(dim, heads))
    self.ff = _PreNorm(dim, _FeedForward(dim, mlp))

  def forward(self, x):
    x = x + self.attn(x)
    return x + self.ff(x)


class STMEMEncoder(nn.Module):
  """SPEC.md 1: per-lead patches, SEP + sin-cos rows, lead embeddings, pre-LN ViT; returns
  (pooled embedding: SEPs dropped, mean, final norm; all tokens after the final norm)."""

  def __init__(self, width: int = 64, depth: int = 1, heads: int = 1, mlp: int = 256,
               patch: int = 75, seq_len: int = 2250, leads: int = 12):
    super().__init__()
    n = seq_len // patch
    self.to_patch_embedding = nn.Sequential(_Patchify(patch), nn.LayerNorm(patch),
                                            nn.Linear(patch, width), nn.LayerNorm(width))
    self.pos_embedding = nn.Parameter(torch.randn(1, n + 2, width))
    self.sep_embedding = nn.Parameter(torch.randn(width))
    self.lead_embeddings = nn.ParameterList([nn.Parameter(torch.randn(width))
                                             for _ in range(leads)])
    self.depth = depth
    for i in range(depth):
      setattr(self, f"block{i}", _ViTBlock(width, heads, mlp))
    self.norm = nn.LayerNorm(width)

  def forward(self, x):
    b, n_leads, _ = x.shape
    tok = self.to_patch_embedding(x) + self.pos_embedding[:, 1:-1].unsqueeze(1)
    d = tok.shape[-1]
    left = (self.sep_embedding + self.pos_embedding[0, 0]).expand(b, n_leads, 1, d)
    right = (self.sep_embedding + self.pos_embedding[0, -1]).expand(b, n_leads, 1, d)
    tok = torch.cat([left, tok, right], dim=2)
    tok = tok + torch.stack(list(self.lead_embeddings))[:n_leads][None, :, None, :]
    n_tok = tok.shape[2]
    tok = tok.reshape(b, n_leads * n_tok, d)
    for i in range(self.depth):
      tok = getattr(self, f"block{i}")(tok)
    tokens = self.norm(tok)
    pooled = tok.reshape(b, n_leads, n_tok, d)[:, :, 1:-1].mean(dim=(1, 2))
    return self.norm(pooled), tokens


def st_mem_full_state(encoder: STMEMEncoder, seed: int, dec_width: int = 32
                      ) -> dict[str, np.ndarray]:
  """The full-MAE layout: encoder under 'encoder.', the patch embedding again at top level,
  and decoder entries with the published names (random values; a conversion drops them)."""
  state = numpy_state(encoder, "encoder.")
  state.update({k[len("encoder."):]: v.copy() for k, v in state.items()
                if k.startswith("encoder.to_patch_embedding.")})
  rng = np.random.default_rng(seed)
  width = state["encoder.norm.weight"].shape[0]
  rows = state["encoder.pos_embedding"].shape[1]
  block = _ViTBlock(dec_width, 1, 2 * dec_width)
  state.update(numpy_state(block, "decoder_blocks.0."))
  extra = {"to_decoder_embedding.weight": (dec_width, width),
           "to_decoder_embedding.bias": (dec_width,), "mask_embedding": (1, 1, dec_width),
           "decoder_pos_embed": (1, rows, dec_width), "decoder_norm.weight": (dec_width,),
           "decoder_norm.bias": (dec_width,), "decoder_head.weight": (75, dec_width),
           "decoder_head.bias": (75,)}
  state.update({k: rng.normal(size=s).astype(np.float32) for k, s in extra.items()})
  return state


# ---------------------------------------------------------------------------------- Net1D


def _same_pad(x, kernel: int, stride: int, value: float = 0.0):
  """TF SAME: total = max((ceil(L/s)-1)*s + k - L, 0), the odd element on the right."""
  length = x.shape[-1]
  total = max((math.ceil(length / stride) - 1) * stride + kernel - length, 0)
  return F.pad(x, (total // 2, total - total // 2), value=value)


class _SameConv(nn.Module):
  def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
    super().__init__()
    self.kernel, self.stride = kernel, stride
    self.conv = nn.Conv1d(cin, cout, kernel, stride, groups=groups)

  def forward(self, x):
    return self.conv(_same_pad(x, self.kernel, self.stride))


class _Net1DBlock(nn.Module):
  """Pre-activation bottleneck, BN off (its modules exist, unused, as in the reference)."""

  def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups_width: int,
               first: bool):
    super().__init__()
    self.first, self.stride, self.cin, self.cout = first, stride, cin, cout
    mid = cout
    self.bn1, self.bn2, self.bn3 = nn.BatchNorm1d(cin), nn.BatchNorm1d(mid), nn.BatchNorm1d(mid)
    self.conv1 = _SameConv(cin, mid, 1)
    self.conv2 = _SameConv(mid, mid, kernel, stride, groups=max(mid // groups_width, 1))
    self.conv3 = _SameConv(mid, cout, 1)
    self.se_fc1, self.se_fc2 = nn.Linear(cout, cout // 2), nn.Linear(cout // 2, cout)

  def forward(self, x):
    y = x if self.first else F.silu(x)
    y = self.conv3(F.silu(self.conv2(F.silu(self.conv1(y)))))
    se = torch.sigmoid(self.se_fc2(F.silu(self.se_fc1(y.mean(-1)))))
    y = y * se[:, :, None]
    shortcut = x
    if self.stride > 1:  # zero-padded (not -inf) SAME max-pool
      shortcut = F.max_pool1d(_same_pad(shortcut, self.stride, self.stride), self.stride)
    if self.cout != self.cin:
      extra = self.cout - self.cin
      shortcut = F.pad(shortcut, (0, 0, extra // 2, extra - extra // 2))
    return y + shortcut


class _Stage(nn.Module):
  def __init__(self, blocks: list[nn.Module]):
    super().__init__()
    self.block_list = nn.ModuleList(blocks)

  def forward(self, x):
    for b in self.block_list:
      x = b(x)
    return x


class Net1D(nn.Module):
  """SPEC.md 3 with BN and dropout off (ECGFounder); returns (logits, pooled features)."""

  def __init__(self, leads: int = 12, stem: int = 16, filters=(16, 32, 32, 64),
               blocks=(2, 2, 2, 2), classes: int = 5, kernel: int = 16, groups_width: int = 16):
    super().__init__()
    self.first_conv = _SameConv(leads, stem, kernel, 2)
    self.first_bn = nn.BatchNorm1d(stem)
    stages, cin = [], stem
    for s, (cout, n) in enumerate(zip(filters, blocks)):
      stages.append(_Stage([_Net1DBlock(cin if b == 0 else cout, cout, kernel,
                                        2 if b == 0 else 1, groups_width, s == 0 and b == 0)
                            for b in range(n)]))
      cin = cout
    self.stage_list = nn.ModuleList(stages)
    self.dense = nn.Linear(cin, classes)

  def forward(self, x):
    x = F.silu(self.first_conv(x))
    for stage in self.stage_list:
      x = stage(x)
    feat = x.mean(-1)
    return self.dense(feat), feat


# ---------------------------------------------------------------------------------- ECG-FM


class _SamePad(nn.Module):
  def __init__(self, kernel: int):
    super().__init__()
    self.remove = 1 if kernel % 2 == 0 else 0

  def forward(self, x):
    return x[:, :, :-self.remove] if self.remove else x


class _ConvPositional(nn.Module):
  def __init__(self, dim: int, kernel: int, groups: int, spelling: str):
    super().__init__()
    conv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=groups)
    if spelling == "parametrizations":
      conv = nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    elif spelling == "old":  # deprecated since torch 2.1 (FutureWarning), still in old files
      with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        conv = nn.utils.weight_norm(conv, name="weight", dim=2)
    self.pos_conv = nn.Sequential(conv, _SamePad(kernel), nn.GELU())

  def forward(self, x):  # (B, T, D) -> (B, T, D)
    return self.pos_conv(x.transpose(1, 2)).transpose(1, 2)


class _SelfAttention(nn.Module):
  def __init__(self, dim: int, heads: int):
    super().__init__()
    self.heads = heads
    self.q_proj, self.k_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)
    self.v_proj, self.out_proj = nn.Linear(dim, dim), nn.Linear(dim, dim)

  def forward(self, x):
    b, n, d = x.shape
    hd = d // self.heads
    split = lambda t: t.reshape(b, n, self.heads, hd).transpose(1, 2)  # noqa: E731
    q = split(self.q_proj(x) * hd ** -0.5)
    attn = torch.softmax(q @ split(self.k_proj(x)).transpose(-1, -2), dim=-1)
    return self.out_proj((attn @ split(self.v_proj(x))).transpose(1, 2).reshape(b, n, d))


class _PostLNLayer(nn.Module):
  def __init__(self, dim: int, heads: int, ffn: int):
    super().__init__()
    self.self_attn = _SelfAttention(dim, heads)
    self.self_attn_layer_norm = nn.LayerNorm(dim)
    self.fc1, self.fc2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
    self.final_layer_norm = nn.LayerNorm(dim)

  def forward(self, x):
    x = self.self_attn_layer_norm(x + self.self_attn(x))
    return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class _Transformer(nn.Module):
  def __init__(self, dim: int, depth: int, heads: int, ffn: int):
    super().__init__()
    self.layers = nn.ModuleList([_PostLNLayer(dim, heads, ffn) for _ in range(depth)])
    self.layer_norm = nn.LayerNorm(dim)

  def forward(self, x):
    x = self.layer_norm(x)  # post-LN wav2vec 2.0: one LayerNorm before the first layer
    for layer in self.layers:
      x = layer(x)
    return x


class _FeatureExtractor(nn.Module):
  def __init__(self, leads: int, channels: int):
    super().__init__()
    blocks = [nn.Sequential(nn.Conv1d(leads, channels, 2, 2, bias=False), nn.Dropout(0.0),
                            nn.GroupNorm(channels, channels, affine=True), nn.GELU())]
    blocks += [nn.Sequential(nn.Conv1d(channels, channels, 2, 2, bias=False), nn.Dropout(0.0),
                             nn.GELU()) for _ in range(3)]
    self.conv_layers = nn.ModuleList(blocks)

  def forward(self, x):
    for block in self.conv_layers:
      x = block(x)
    return x


class ECGFM(nn.Module):
  """SPEC.md 2: conv features -> LN -> Linear -> + conv positional -> LN -> post-LN layers;
  with the pretraining heads' parameters (unused here); returns (mean over frames, frames)."""

  def __init__(self, leads: int = 12, width: int = 64, depth: int = 2, heads: int = 2,
               ffn: int = 128, channels: int = 32, pos_kernel: int = 16, pos_groups: int = 4,
               spelling: str = "parametrizations", final_dim: int = 32, latent_vars: int = 8):
    super().__init__()
    self.latent_groups, self.latent_vars = 2, latent_vars
    self.feature_extractor = _FeatureExtractor(leads, channels)
    self.layer_norm = nn.LayerNorm(channels)
    self.post_extract_proj = nn.Linear(channels, width)
    self.conv_pos = _ConvPositional(width, pos_kernel, pos_groups, spelling)
    self.encoder = _Transformer(width, depth, heads, ffn)
    self.mask_emb = nn.Parameter(torch.rand(width))
    self.quantizer = nn.Module()
    self.quantizer.vars = nn.Parameter(torch.rand(1, 2 * latent_vars, final_dim // 2))
    self.quantizer.weight_proj = nn.Linear(channels, 2 * latent_vars)
    self.project_q, self.final_proj = nn.Linear(final_dim, final_dim), nn.Linear(width, final_dim)

  def forward(self, x):
    feats = self.layer_norm(self.feature_extractor(x).transpose(1, 2))
    h = self.post_extract_proj(feats)
    h = self.encoder(h + self.conv_pos(h))
    return h.mean(1), h


def wav2vec2_loss(net: ECGFM, x, mask, negs, codes, logit_temp: float = 0.1,
                  diversity_weight: float = 0.1, feature_pen_weight: float = 10.0):
  """The wav2vec 2.0 pretraining loss of `net` written from SPEC section 2 (no dropout), given
  the span masks (B, T) bool, the distractor frames (B, T, N) and the quantiser's codes
  (B, T, G) (the Gumbel draw): (loss, contrastive, diversity, feature penalty)."""
  raw = net.feature_extractor(x).transpose(1, 2)  # (B, T, C) raw CNN features
  feats = net.layer_norm(raw)
  h = net.post_extract_proj(feats)
  h = torch.where(mask[..., None], net.mask_emb.expand_as(h), h)
  h = net.encoder(h + net.conv_pos(h))
  b, t, _ = feats.shape
  g, v = net.latent_groups, net.latent_vars
  logits_q = net.quantizer.weight_proj(feats).view(b, t, g, v)
  book = net.quantizer.vars.view(g, v, -1)
  one_hot = torch.nn.functional.one_hot(codes.long(), v).float()  # (B, T, G, V)
  q = torch.einsum("btgv,gvd->btgd", one_hot, book).reshape(b, t, -1)
  targets = net.project_q(q)
  preds = net.final_proj(h)
  norm = lambda a: a / a.norm(dim=-1, keepdim=True).clamp_min(1e-8)  # noqa: E731
  sim = norm(preds) @ norm(targets).transpose(1, 2)  # (B, T, T)
  pos = torch.diagonal(sim, dim1=1, dim2=2)[..., None]
  neg = torch.gather(sim, 2, negs.long())
  neg_codes = torch.stack([codes[i][negs[i].long()] for i in range(b)])  # (B, T, N, G)
  same = (neg_codes == codes[:, :, None, :]).all(-1)
  neg = neg.masked_fill(same, float("-inf"))
  logits = torch.cat([pos, neg], -1) / logit_temp
  w = mask.float()
  nll = -torch.log_softmax(logits, -1)[..., 0]
  contrastive = (nll * w).sum() / w.sum()
  soft = torch.softmax(logits_q, -1)
  avg = (soft * w[..., None, None]).sum((0, 1)) / w.sum()
  ppl = torch.exp(-(avg * torch.log(avg + 1e-7)).sum(-1)).sum()
  diversity = (g * v - ppl) / (g * v)
  pen = raw.pow(2).mean()
  loss = contrastive + diversity_weight * diversity + feature_pen_weight * pen
  return loss, contrastive, diversity, pen
