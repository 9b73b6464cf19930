"""Small pytree helpers shared by the engine, exports and objectives."""

from __future__ import annotations

from typing import Any, Callable

import jax


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
