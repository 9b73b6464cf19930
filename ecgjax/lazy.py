"""Heavy optional modules imported on first use, so importing ecgjax stays light."""

from __future__ import annotations

import importlib
from typing import Any


class LazyModule:
  """Stands for a module and imports it on the first attribute read.

  scipy.signal (~60 MiB of RSS) and scikit-learn (~100 MiB with the scipy.stats it pulls)
  were imported by every trainer process through ecgjax.data and the objectives, though a
  pretraining step uses neither: whole-process memory is a number we compare on.
  """

  def __init__(self, name: str):
    self._name = name
    self._module: Any = None

  def __getattr__(self, attr: str) -> Any:
    if attr.startswith("__"):
      raise AttributeError(attr)
    if self._module is None:
      self._module = importlib.import_module(self._name)
    return getattr(self._module, attr)
