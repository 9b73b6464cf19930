"""The one plug-in mechanism: a plug-in is a module of a package, found by its name.

Data formats (`ecgjax.data.formats.<name>`), objectives (`ecgjax.objectives.<module>`) and
evaluators (`ecgjax.eval.evaluators.<type>`) are modules of their package. A registry imports
them by name with `importlib`, so adding one is one new file, no list to edit, and the
registry never imports its plug-ins statically (no import cycle through it).
"""

from __future__ import annotations

import importlib
import pkgutil
import types

from ecgjax.errors import ConfigError


def names(package: str) -> tuple[str, ...]:
  """Sorted module names of `package` (its plug-ins), private ones (`_x`) left out."""
  pkg = importlib.import_module(package)
  return tuple(sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)
                      if not m.name.startswith("_")))


def load(package: str, name: str, what: str) -> types.ModuleType:
  """The plug-in module `package.name`; an unknown name is a ConfigError listing the known."""
  known = names(package)
  if name not in known:
    raise ConfigError(f"unknown {what} {name!r}; known: {', '.join(known)}")
  return importlib.import_module(f"{package}.{name}")


def load_all(package: str) -> tuple[types.ModuleType, ...]:
  """Imports every plug-in module of `package` (modules that register themselves)."""
  return tuple(importlib.import_module(f"{package}.{n}") for n in names(package))


class Registry:
  """Named plug-ins of one kind (models, objectives, augmentations), registered by decorator
  in the modules of `package`, which are imported (by name) on the first lookup."""

  def __init__(self, what: str, package: str | None = None):
    self.what, self.package = what, package
    self._items: dict[str, object] = {}
    self._loaded = package is None

  def register(self, name: str):
    """Decorator adding `obj` under `name` (a second, different object is an error)."""
    def deco(obj):
      if name in self._items and self._items[name] is not obj:
        raise ValueError(f"{self.what} {name!r} is registered twice")
      self._items[name] = obj
      return obj
    return deco

  def _load(self) -> None:
    if not self._loaded:
      self._loaded = True
      load_all(self.package)

  def names(self) -> tuple[str, ...]:
    """The registered names, sorted."""
    self._load()
    return tuple(sorted(self._items))

  def get(self, name: str, key: str = "") -> object:
    """The plug-in `name`; unknown: a ConfigError naming `key` (the config key) and the known."""
    self._load()
    if name not in self._items:
      where = f"{key}={name!r}: " if key else ""
      raise ConfigError(f"{where}unknown {self.what} {name!r}; known: {', '.join(self.names())}")
    return self._items[name]

  def __contains__(self, name: str) -> bool:
    self._load()
    return name in self._items
