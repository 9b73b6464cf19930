"""`ecgjax.serve`: the export's embedding function as StableHLO, run with jax alone."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from ecgjax import export as export_lib
from ecgjax import models
from ecgjax import serve
from ecgjax.data import transforms

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("name,leads", [("st_mem_encoder", ("I", "II", "V1", "V2")),
                                        ("resnet1d", None)])
def test_served_function_equals_the_model(tmp_path, name, leads):
  names = leads or transforms.leads_lib.LEADS_12
  overrides = {"num_classes": 0} if name == "resnet1d" else {}
  module = models.build_model(name, "mu", **overrides)
  x0 = np.zeros((1, 12, 2250), np.float32)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), x0)
  pp = transforms.Preprocessing(fs=250, samples=2250, leads=names, bandpass=None)
  path = export_lib.save_export(
      str(tmp_path / "e"), variables["params"],
      {"model": name, "variant": "mu", "module": name, "overrides": overrides,
       "embedding": {"dim": 64, "pooling": "mean"}}, pp.to_dict(),
      collections={k: v for k, v in variables.items() if k != "params"})
  out = serve.write_serving(path, batch=4)
  assert sorted(os.listdir(out)) == ["embed.jax_exported", "meta.json", "variables.npz"]
  served = serve.load(path)
  assert served.meta["platforms"] == ["cpu", "cuda"] and served.input_shape == (len(names), 2250)
  x = np.random.default_rng(1).normal(size=(6, len(names), 2250)).astype(np.float32)
  got = served(x)  # 6 records: one whole batch of 4 and one padded
  exp = export_lib.load_export(path)
  kwargs = {}
  if leads:
    kwargs["lead_idx"] = np.asarray(transforms.leads_lib.lead_indices(names), np.int32)
  want = np.asarray(exp.module.apply(exp.variables, x, **kwargs)[0])
  assert got.shape == want.shape
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="inputs must be"):
    served(x[:, :1])


def test_load_needs_neither_flax_nor_the_model_code(tmp_path):
  module = models.build_model("resnet1d", "mu", num_classes=0)
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), np.zeros((1, 12, 500), np.float32))
  pp = transforms.Preprocessing(fs=100, samples=500, bandpass=None)
  path = export_lib.save_export(
      str(tmp_path / "e"), variables["params"],
      {"model": "resnet1d", "variant": "mu", "module": "resnet1d",
       "overrides": {"num_classes": 0}, "embedding": {"dim": 256, "pooling": "mean"}},
      pp.to_dict(), collections={"batch_stats": variables["batch_stats"]})
  proc = subprocess.run([sys.executable, "-m", "ecgjax.serve", "build", path, "--batch", "2"],
                        cwd=REPO, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0 and "batch 2" in proc.stdout, proc.stderr[-2000:]
  # A fresh interpreter that refuses to import flax or the rest of ecgjax still serves.
  code = ("import sys, importlib.util, numpy as np\n"
          "class Block:\n"
          "  def find_spec(self, name, path=None, target=None):\n"
          "    if name.split('.')[0] == 'flax' or (name.startswith('ecgjax.') and\n"
          "        name != 'ecgjax.serve'):\n"
          "      raise ImportError('blocked: ' + name)\n"
          "sys.meta_path.insert(0, Block())\n"
          "from ecgjax import serve\n"
          "m = serve.load(sys.argv[1])\n"
          "print(m(np.ones((3, 12, 500), np.float32)).shape == (3, m.meta['dim']))\n")
  run = subprocess.run([sys.executable, "-c", code, path], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert run.returncode == 0, run.stderr[-2000:]
  assert run.stdout.strip().splitlines()[-1] == "True"
