"""Small pytree helpers shared by the engine, exports and objectives; the one tree comparison."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import numpy as np


def path_str(path: tuple) -> str:
  """'/'-joined names of a `jax.tree_util` key path (dict keys, attributes, indices)."""
  parts = []
  for k in path:
    for attr in ("key", "name", "idx"):
      if hasattr(k, attr):
        parts.append(str(getattr(k, attr)))
        break
    else:
      parts.append(str(k))
  return "/".join(parts)


def map_with_path_str(fn: Callable[[str, Any], Any], tree: Any) -> Any:
  """`jax.tree.map` whose function also gets the leaf's '/'-joined path."""
  return jax.tree_util.tree_map_with_path(lambda p, x: fn(path_str(p), x), tree)


def flatten(tree: Any) -> dict[str, Any]:
  """{'/'-joined path: leaf}."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  return {path_str(p): x for p, x in leaves}


@dataclasses.dataclass(frozen=True)
class TreeDiff:
  """How a parameter tree differs from the one a model wants (paths '/'-joined)."""
  missing: tuple[tuple[str, tuple[int, ...]], ...]  # wanted, absent: (path, wanted shape)
  unexpected: tuple[tuple[str, tuple[int, ...]], ...]  # present, not wanted: (path, shape)
  reshaped: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]  # (path, have, want)

  @property
  def ok(self) -> bool:
    """Whether the trees have the same paths with the same shapes."""
    return not (self.missing or self.unexpected or self.reshaped)

  def lines(self, have: str = "have", want: str = "want") -> list[str]:
    """One line per difference, missing first."""
    return ([f"missing {p} {s}" for p, s in self.missing]
            + [f"unexpected {p} {s}" for p, s in self.unexpected]
            + [f"shape of {p}: {have} {h} vs {want} {w}" for p, h, w in self.reshaped])

  def summary(self) -> str:
    """A one-line count of each kind with an example of each."""
    bits = []
    if self.missing:
      bits.append(f"{len(self.missing)} parameter(s) missing (e.g. {self.missing[0][0]})")
    if self.unexpected:
      bits.append(f"{len(self.unexpected)} unexpected (e.g. {self.unexpected[0][0]})")
    if self.reshaped:
      p, h, w = self.reshaped[0]
      bits.append(f"{len(self.reshaped)} with another shape (e.g. {p}: {h} vs {w})")
    return "; ".join(bits)


def compare(have: Any, want: Any) -> TreeDiff:
  """The one comparison of parameter trees: paths and shapes of `have` against `want` (arrays
  or ShapeDtypeStructs)."""
  h = {p: tuple(np.shape(x)) for p, x in flatten(have).items()}
  w = {p: tuple(np.shape(x)) for p, x in flatten(want).items()}
  return TreeDiff(missing=tuple((p, w[p]) for p in sorted(set(w) - set(h))),
                  unexpected=tuple((p, h[p]) for p in sorted(set(h) - set(w))),
                  reshaped=tuple((p, h[p], w[p]) for p in sorted(set(h) & set(w))
                                 if h[p] != w[p]))
