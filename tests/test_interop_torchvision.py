"""torchvision-layout ResNet -> ecgjax ResNet2D (EIANet's image encoder), layer by layer.

The torch reference below is written from torchvision's ResNet architecture (v1.5 bottleneck,
stride on the 3x3 conv, 1x1 conv + BN downsample), small enough to run in a test; its BatchNorm
statistics are randomised so that inference-mode BN is really exercised.
"""

import dataclasses

import jax
import numpy as np
import pytest

from ecgjax import export as export_lib
from ecgjax import models
from ecgjax.eval import embed
from ecgjax.interop import __main__ as interop_cli
from ecgjax.interop import conversion

torch = pytest.importorskip("torch")
tnn = torch.nn


class _Bottleneck(tnn.Module):
  expansion = 4

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
    self.bn1 = tnn.BatchNorm2d(planes)
    self.conv2 = tnn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn2 = tnn.BatchNorm2d(planes)
    self.conv3 = tnn.Conv2d(planes, planes * 4, 1, bias=False)
    self.bn3 = tnn.BatchNorm2d(planes * 4)
    self.relu = tnn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.relu(self.bn2(self.conv2(y)))
    y = self.bn3(self.conv3(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class _Basic(tnn.Module):
  expansion = 1

  def __init__(self, inplanes, planes, stride, downsample):
    super().__init__()
    self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
    self.bn1 = tnn.BatchNorm2d(planes)
    self.conv2 = tnn.Conv2d(planes, planes, 3, padding=1, bias=False)
    self.bn2 = tnn.BatchNorm2d(planes)
    self.relu = tnn.ReLU()
    self.downsample = downsample

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class _TorchResNet(tnn.Module):
  def __init__(self, block, layers, width=8, classes=10):
    super().__init__()
    self.inplanes = width
    self.conv1 = tnn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
    self.bn1 = tnn.BatchNorm2d(width)
    self.relu = tnn.ReLU()
    self.maxpool = tnn.MaxPool2d(3, stride=2, padding=1)
    for s, n in enumerate(layers):
      setattr(self, f"layer{s + 1}", self._layer(block, width * 2 ** s, n, 1 if s == 0 else 2))
    self.avgpool = tnn.AdaptiveAvgPool2d(1)
    self.fc = tnn.Linear(width * 8 * block.expansion, classes)

  def _layer(self, block, planes, n, stride):
    down = None
    if stride != 1 or self.inplanes != planes * block.expansion:
      down = tnn.Sequential(tnn.Conv2d(self.inplanes, planes * block.expansion, 1,
                                       stride=stride, bias=False),
                            tnn.BatchNorm2d(planes * block.expansion))
    blocks = [block(self.inplanes, planes, stride, down)]
    self.inplanes = planes * block.expansion
    blocks += [block(self.inplanes, planes, 1, None) for _ in range(1, n)]
    return tnn.Sequential(*blocks)

  def forward(self, x):
    x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(torch.flatten(self.avgpool(x), 1))


def _reference(block=_Bottleneck, layers=(2, 1, 1, 1), seed=0):
  torch.manual_seed(seed)
  net = _TorchResNet(block, layers)
  with torch.no_grad():  # non-trivial BN: inference mode must use these statistics
    for m in net.modules():
      if isinstance(m, tnn.BatchNorm2d):
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
        m.running_mean.uniform_(-0.3, 0.3)
        m.running_var.uniform_(0.5, 2.0)
  return net.eval()


def _state(net):
  return {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}


def _torch_taps(net, x):
  """Outputs of the stem BN and of every stage, NHWC, plus the pooled features."""
  taps = {}
  hooks = [getattr(net, name).register_forward_hook(
      lambda _m, _i, out, name=name: taps.__setitem__(name, out.detach().numpy()))
           for name in ("bn1", "layer1", "layer2", "layer3", "layer4", "avgpool")]
  with torch.no_grad():
    net(torch.from_numpy(x))
  for h in hooks:
    h.remove()
  return {k: (v.transpose(0, 2, 3, 1) if k != "avgpool" else v[:, :, 0, 0])
          for k, v in taps.items()}


def _apply(conv, x):
  module = models.build_model(conv.encoder["module"], conv.encoder["variant"],
                              **conv.encoder["overrides"])
  variables = {"params": conv.params, **conv.collections}
  (out, _), inter = module.apply(variables, x, capture_intermediates=True,
                                 mutable=["intermediates"])
  return np.asarray(out), inter["intermediates"]["body"]


def test_bottleneck_resnet_matches_torch_layer_by_layer():
  net = _reference()
  x = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype(np.float32)
  ref = _torch_taps(net, x)
  conv = conversion.convert_state_dict("torchvision-resnet50", _state(net), channels=3,
                                       spatial_attention=False)
  rep = conv.report
  assert rep.ok and not rep.allowed_missing
  assert all(k.startswith("fc.") for k in rep.dropped) and len(rep.dropped) == 2
  assert conv.encoder["overrides"]["stage_sizes"] == [2, 1, 1, 1]
  assert conv.encoder["embedding"]["dim"] == 8 * 8 * 4
  assert set(conv.collections) == {"batch_stats"}
  out, inter = _apply(conv, x.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(inter["stem_bn"]["__call__"][0], ref["bn1"], atol=1e-4)
  last = {0: "stage0_block1", 1: "stage1_block0", 2: "stage2_block0", 3: "stage3_block0"}
  for s, name in last.items():
    np.testing.assert_allclose(inter[name]["__call__"][0], ref[f"layer{s + 1}"], rtol=1e-4,
                               atol=1e-4, err_msg=name)
  np.testing.assert_allclose(out, ref["avgpool"], rtol=1e-4, atol=1e-4)


def test_one_channel_sums_the_rgb_filters_and_basic_blocks_convert():
  net = _reference(_Basic, (1, 1, 1, 1), seed=1)
  gray = np.random.default_rng(1).uniform(size=(2, 1, 48, 64)).astype(np.float32)
  ref = _torch_taps(net, np.repeat(gray, 3, axis=1))
  conv = conversion.convert_state_dict("torchvision-resnet50", _state(net), channels=1,
                                       spatial_attention=False)
  assert conv.encoder["overrides"]["block"] == "basic"
  assert conv.params["body"]["stem_conv"]["kernel"].shape == (7, 7, 1, 8)
  assert conv.contract.channels == 1 and conv.contract.threshold  # EIANet's preprocessing
  out, _ = _apply(conv, gray.transpose(0, 2, 3, 1))
  np.testing.assert_allclose(out, ref["avgpool"], rtol=1e-4, atol=1e-4)


def test_attention_gates_start_at_random_init_and_are_reported():
  conv = conversion.convert_state_dict("torchvision-resnet50", _state(_reference()))
  rep = conv.report
  assert rep.ok and conv.encoder["overrides"]["spatial_attention"] is True
  assert sorted(p.split()[0] for p in rep.allowed_missing) == [
      f"body/attention{s}/conv/kernel" for s in range(4)]
  assert any("random init" in n for n in rep.notes) and "RANDOM INIT" in rep.summary()
  assert conv.params["body"]["attention0"]["conv"]["kernel"].shape == (7, 7, 2, 1)


def test_missing_statistics_and_stray_keys_fail_by_name():
  state = _state(_reference())
  del state["layer2.0.bn1.running_var"]
  state["layer9.0.conv1.weight"] = np.zeros((8, 8, 1, 1), np.float32)
  with pytest.raises(conversion.ConversionError) as e:
    conversion.convert_state_dict("torchvision-resnet50", state, spatial_attention=False)
  rep = e.value.report
  assert "layer2.0.bn1.running_var" in rep.missing
  assert rep.unexpected == ["layer9.0.conv1.weight"]


def test_cli_writes_an_image_export_with_statistics_that_fine_tuning_loads(tmp_path, capsys):
  net = _reference()
  ckpt = tmp_path / "resnet.pth"
  torch.save(net.state_dict(), ckpt)
  out = tmp_path / "export"
  assert interop_cli.main(["convert", "--from", "torchvision-resnet50", str(ckpt),
                           str(out)]) == 0
  printed = capsys.readouterr().out
  assert "RANDOM INIT" in printed and "1-channel images" in printed
  exp = export_lib.load_export(str(out))
  assert exp.config["format_version"] == 3 and exp.modality == "image"
  assert exp.image_contract["channels"] == 1
  bn = net.layer1[0].bn2
  np.testing.assert_allclose(exp.collections["batch_stats"]["body"]["stage0_block0"]["bn2"]["var"],
                             bn.running_var.numpy())
  embed.check_export(exp)
  from ecgjax.errors import ConfigError
  from ecgjax.finetune import load
  with pytest.raises(ConfigError, match="is an encoder"):  # explain --export needs a classifier
    load.load_classifier_export(str(out))
  # Fine-tuning's objective starts from the export's weights AND statistics, and hands them
  # back unchanged as its encoder.
  from ecgjax.objectives import classifier, supervised
  backbone = classifier.backbone_from_export(exp)
  obj = supervised.Supervised(backbone, ("a",), task="multilabel", loss="bce")
  params, cols = obj.init(jax.random.PRNGKey(0), {"pixels": np.ones((1, 32, 48, 1), np.float32)})
  got, _ = obj.export_encoder(params, cols)
  for tree in ("params", "batch_stats"):
    ref = exp.params if tree == "params" else exp.collections["batch_stats"]
    jax.tree.map(np.testing.assert_array_equal, ref, jax.tree.map(np.asarray, got[tree]))


def test_a_corrupt_statistics_file_is_named(tmp_path):
  conv = conversion.convert_state_dict("torchvision-resnet50", _state(_reference()),
                                       spatial_attention=False)
  path = conversion.save_conversion(conv, str(tmp_path / "export"))
  with open(f"{path}/{export_lib.COLLECTIONS_FILE}", "r+b") as f:
    f.seek(10)
    f.write(b"\x00\x01")
  with pytest.raises(export_lib.ExportError, match="collections.safetensors is corrupt"):
    export_lib.load_export(path)


def test_eianet_fine_tunes_on_printouts_from_a_converted_export(tmp_path):
  """configs/finetune.py:backbone=export,input=image from a torchvision export: the weights
  and BN statistics are the starting point, the attention gates come with it, the run ends
  with a split export of the fine-tuned encoder."""
  from absl import flags
  from configs import finetune as ft_config
  from ecgjax.finetune import trainer
  from ecgjax.images import __main__ as images_cli
  flags.FLAGS.mark_as_parsed()
  conv = conversion.convert_state_dict("torchvision-resnet50", _state(_reference()))
  exp_dir = conversion.save_conversion(conv, str(tmp_path / "imagenet"))
  printouts = str(tmp_path / "printouts")
  images_cli.render_source("synthetic:24?seed=4&fs=500", printouts, dpi=40.0, progress=False)
  c = ft_config.get_config("backbone=export,input=image,runlocal")
  c.export, c.data, c.labels = exp_dir, f"image:{printouts}", "NORM"
  c.image.height, c.image.width = 64, 90
  c.epochs, c.batch_size, c.eval_batch_size, c.bootstrap = 1, 8, 8, 20
  out = trainer.finetune(c, str(tmp_path / "run"), devices=jax.devices()[:1])
  assert out["n_splits"] == 2
  tuned = export_lib.load_export(str(tmp_path / "run" / "split0" / "export"))
  assert tuned.modality == "image" and tuned.config["encoder"]["overrides"]["spatial_attention"]
  start = export_lib.load_export(exp_dir)
  moved = jax.tree.map(lambda a, b: not np.allclose(a, b), start.params, tuned.params)
  assert any(jax.tree.leaves(moved))  # fine-tuning changed the imported weights
  c.image.update({k: False for k in ("threshold", "components", "opening", "blur",
                                      "grayscale", "equalize", "binarize")})
  c.image.channels = 3  # raw RGB, but the export takes one channel
  with pytest.raises(Exception, match="takes 1-channel images"):
    trainer.finetune(c, str(tmp_path / "run3"), devices=jax.devices()[:1])


def test_image_exports_embed_printouts_for_the_probe_suite(tmp_path):
  """embed_source (finetune/embed.py, probe.py) on an image export: the export's image contract
  prepares each printout, the encoder's pooled features are the embedding."""
  from ecgjax import data
  from ecgjax.images import __main__ as images_cli
  conv = conversion.convert_state_dict("torchvision-resnet50", _state(_reference()),
                                       spatial_attention=False)
  conv.contract = dataclasses.replace(conv.contract, height=48, width=68)
  exp = export_lib.load_export(conversion.save_conversion(conv, str(tmp_path / "export")))
  printouts = str(tmp_path / "printouts")
  images_cli.render_source("synthetic:5?seed=6&fs=500", printouts, dpi=40.0, progress=False)
  src = data.open_source(f"image:{printouts}")
  d = embed.embed_source(exp, src, batch_size=4, progress=False, workers=0,
                         mesh=None)
  assert d["embeddings"].shape == (5, 256) and list(d["label_names"]) == list(src.label_names)
  pp = embed.preprocessing_of(exp)
  x = np.stack([pp.prepare_record(src[i]) for i in range(5)])
  want, _ = exp.module.apply(exp.variables, x)
  order = [list(d["record_id"]).index(str(src.metadata()["record_id"][i])) for i in range(5)]
  np.testing.assert_allclose(d["embeddings"][order], np.asarray(want), rtol=1e-4, atol=1e-5)
