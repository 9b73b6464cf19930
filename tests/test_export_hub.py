"""The export format 3 (safetensors + model card), older msgpack exports, and the Hub:
`ecgjax.from_pretrained` on a directory and on a repo id from an offline cache, `push_to_hub`."""

import hashlib
import json
import os
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest
from safetensors.numpy import load as st_load

import ecgjax
from ecgjax import export as export_lib
from ecgjax import hub
from ecgjax import models
from ecgjax.data import transforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DESC = {"model": "resnet1d", "variant": "mu", "module": "resnet1d",
        "overrides": {"num_classes": 0}, "embedding": {"dim": 256, "pooling": "mean"}}


@pytest.fixture(scope="module")
def variables():
  module = models.build_model("resnet1d", "mu", num_classes=0)
  return jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 12, 500), np.float32))


def _contract():
  return transforms.Preprocessing(fs=100, samples=500, bandpass=None).to_dict()


def test_format_3_is_safetensors_with_a_model_card(variables, tmp_path):
  params, stats = variables["params"], {"batch_stats": variables["batch_stats"]}
  path = export_lib.save_export(str(tmp_path / "e"), params, DESC, _contract(),
                                training={"data": "synthetic:100", "steps": 7},
                                collections=stats)
  names = sorted(os.listdir(path))
  assert names == ["README.md", "collections.safetensors", "config.json", "params.safetensors"]
  exp = export_lib.load_export(path)
  assert exp.config["format_version"] == 3
  jax.tree.map(np.testing.assert_array_equal, exp.params, jax.tree.map(np.asarray, params))
  jax.tree.map(np.testing.assert_array_equal, exp.collections, jax.tree.map(np.asarray, stats))
  # Plain safetensors, one tensor per leaf named by its path: readable without ecgjax or flax.
  flat = st_load(open(os.path.join(path, "params.safetensors"), "rb").read())
  leaves = jax.tree_util.tree_leaves_with_path(params)
  assert len(flat) == len(leaves)
  key = "/".join(k.key for k in leaves[0][0])
  np.testing.assert_array_equal(flat[key], np.asarray(leaves[0][1]))
  card = open(os.path.join(path, "README.md")).read()
  n = sum(int(np.size(x)) for x in jax.tree.leaves(params))
  assert f"parameters: {n:,}" in card and "| fs | `100.0` |" in card
  assert "| steps | `7` |" in card and "library_name: ecgjax" in card
  # Empty sub-trees survive (safetensors stores leaves only).
  tree = {"a": {"b": np.ones(2, np.float32)}, "empty": {}}
  assert export_lib._unblob(export_lib._blob(tree))["empty"] == {}  # pylint: disable=protected-access


def test_msgpack_exports_of_formats_1_and_2_still_load(variables, tmp_path):
  """An export written by an older ecgjax (msgpack files, format 2) loads unchanged."""
  old = tmp_path / "old"
  old.mkdir()
  blobs = {"params.msgpack": flax.serialization.msgpack_serialize(
               jax.tree.map(np.asarray, variables["params"])),
           "collections.msgpack": flax.serialization.msgpack_serialize(
               {"batch_stats": jax.tree.map(np.asarray, variables["batch_stats"])})}
  for name, blob in blobs.items():
    (old / name).write_bytes(blob)
  config = {"format_version": 2, "model": "resnet1d", "variant": "mu",
            "encoder": {"module": "resnet1d", "overrides": {"num_classes": 0}},
            "input": _contract(), "embedding": DESC["embedding"],
            "params_file": "params.msgpack",
            "params_sha256": hashlib.sha256(blobs["params.msgpack"]).hexdigest(),
            "collections_file": "collections.msgpack", "collections": ["batch_stats"],
            "collections_sha256": hashlib.sha256(blobs["collections.msgpack"]).hexdigest()}
  (old / "config.json").write_text(json.dumps(config))
  exp = ecgjax.from_pretrained(str(old))
  jax.tree.map(np.testing.assert_array_equal, exp.params,
               jax.tree.map(np.asarray, variables["params"]))
  assert "batch_stats" in exp.collections
  # push_to_hub refuses it: it has no model card to show.
  with pytest.raises(export_lib.ExportError, match="no model card"):
    hub.push_to_hub(str(old), "someone/model")


def _hub_cache(cache, repo_id, export_dir):
  """A Hub cache holding `export_dir` as repo_id's main revision (the layout
  huggingface_hub writes: blobs are plain files here, which it reads the same)."""
  commit = "0123456789abcdef0123456789abcdef01234567"
  root = cache / f"models--{repo_id.replace('/', '--')}"
  snap = root / "snapshots" / commit
  snap.mkdir(parents=True)
  for name in os.listdir(export_dir):
    (snap / name).write_bytes(open(os.path.join(export_dir, name), "rb").read())
  (root / "refs").mkdir()
  (root / "refs" / "main").write_text(commit)
  return snap


def test_from_pretrained_resolves_a_repo_id_from_the_offline_cache(variables, tmp_path):
  path = export_lib.save_export(str(tmp_path / "e"), variables["params"], DESC, _contract(),
                                collections={"batch_stats": variables["batch_stats"]})
  cache = tmp_path / "hub"
  snap = _hub_cache(cache, "ecgjax-test/resnet-mu", path)
  env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache),
         "JAX_PLATFORMS": "cpu"}
  code = ("import ecgjax, sys; e = ecgjax.from_pretrained(sys.argv[1]); "
          "print(e.directory); print(e.config['model'])")
  proc = subprocess.run([sys.executable, "-c", code, "ecgjax-test/resnet-mu"], cwd=REPO,
                        env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert proc.stdout.split() == [str(snap), "resnet1d"]
  # Nothing cached under that name: one line naming it, exit status 2.
  miss = subprocess.run([sys.executable, "-m", "ecgjax.hub", "pull", "ecgjax-test/absent"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert miss.returncode == 2 and "ecgjax-test/absent: not in the local Hub cache" in miss.stderr
  assert "Traceback" not in miss.stderr
  with pytest.raises(export_lib.ExportError, match="no such export directory"):
    ecgjax.from_pretrained(str(tmp_path / "nowhere" / "x"))


def test_push_to_hub_is_one_upload_of_the_export(variables, tmp_path, monkeypatch):
  import huggingface_hub
  calls = []

  class FakeApi:
    def __init__(self, token=None):
      calls.append(("token", token))

    def create_repo(self, repo_id, **kw):
      calls.append(("create_repo", repo_id, kw["exist_ok"], kw["private"]))

    def upload_folder(self, **kw):
      calls.append(("upload_folder", kw["repo_id"], sorted(os.listdir(kw["folder_path"]))))
      return type("Info", (), {"commit_url": "https://hub/commit/1"})()

  monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
  path = export_lib.save_export(str(tmp_path / "e"), variables["params"], DESC, _contract())
  assert ecgjax.push_to_hub(path, "me/ecg", private=True, token="t") == "https://hub/commit/1"
  assert calls == [("token", "t"), ("create_repo", "me/ecg", True, True),
                   ("upload_folder", "me/ecg", ["README.md", "config.json",
                                                "params.safetensors"])]
