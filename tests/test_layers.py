"""The library's layering, read from the source: import cycles and upward imports fail here.

Every `import` in a file counts, at module level or inside a function (a lazy import is still
a dependency). Registries find their plug-ins by module name (`importlib`), which is not an
import edge: that is how formats and objectives stay free of cycles with their registries.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PKG = ROOT / "ecgjax"

# Which top-level parts of ecgjax each part may import (besides itself). Imports point down:
# scripts -> finetune (recipes) -> {train, eval} -> objectives -> models -> {leads, tree}.
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "cli": {"errors"},
    "leads": set(),
    "tree": set(),
    # Config-file helpers sit at the top with the scripts: the groups come from the plug-ins.
    "configs": {"contract", "objectives"},
    "plotting": {"leads"},
    "images": {"data", "leads", "cli"},
    "explain": {"data", "leads", "models", "tree"},
    "contract": {"leads"},
    "models": {"leads", "tree"},
    "export": {"contract", "leads", "models"},
    "hub": {"cli", "export"},
    "serve": {"cli", "export", "leads"},
    "data": {"contract", "leads"},
    "objectives": {"leads", "models", "plotting", "tree"},
    "interop": {"contract", "data", "export", "leads", "models", "tree"},
    "train": {"contract", "data", "export", "interop", "leads", "models", "objectives", "serve",
              "tree"},
    "eval": {"contract", "data", "export", "leads", "models", "plotting", "train", "tree"},
    "launch": {"train"},
    "finetune": {"contract", "data", "eval", "export", "leads", "models", "objectives",
                 "plotting", "train", "tree"},
    # The benchmark runs the recipes: probes (eval) and fine-tuning on the same splits.
    "benchmark": {"cli", "contract", "data", "eval", "export", "finetune", "launch", "leads",
                  "models", "train"},
}
# The command-line programs sit on top of everything.
ALLOWED["apps"] = set(ALLOWED) | {"cli", "configs", "launch"}
# The package root (`ecgjax/__init__.py`) offers from_pretrained / push_to_hub, loaded lazily.
ALLOWED[""] = {"hub"}
# ecgjax.errors (the user-mistake exception) sits under everything.
ALLOWED["registry"] = set()
# ecgjax.lazy (import-on-first-use, stdlib only) sits under everything as well.
ALLOWED["lazy"] = set()
ALLOWED = {part: allowed | ({"errors", "registry", "lazy"} - {part}
                            if part not in ("errors", "lazy") else set())
           for part, allowed in ALLOWED.items()}
# The contract between data and model, and the lead table, must stay importable without the
# heavy stacks (grain workers and the export format load them).
LIGHT = {"leads": ("jax", "flax", "grain", "scipy"), "contract": ("jax", "flax", "grain", "numpy"),
         "data": ("flax", "optax", "orbax"), "errors": ("absl", "jax", "numpy"), "lazy": ("jax", "numpy"),
         "cli": ("jax", "numpy", "grain")}


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
  return {_module_name(p): p for p in PKG.rglob("*.py")}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
  """Absolute names of the ecgjax modules (or third-party roots) `path` imports."""
  is_pkg = path.name == "__init__.py"
  package = name if is_pkg else name.rpartition(".")[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      out.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = package.split(".")[:len(package.split(".")) - node.level + 1]
        mod = ".".join(base + ([node.module] if node.module else []))
      else:
        mod = node.module or ""
      out.add(mod)
      # `from pkg import sub` depends on the submodule, not only on pkg/__init__.
      out.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in known)
  return out


def _graph() -> dict[str, set[str]]:
  mods = _modules()
  known = set(mods)
  graph = {}
  for name, path in mods.items():
    deps = {d for d in _imports(name, path, known) if d in known and d != name}
    # A module always loads its parent packages first; that is not a dependency edge.
    graph[name] = {d for d in deps if not name.startswith(d + ".")}
  return graph


def _part(module: str) -> str:
  return module.split(".")[1] if module.count(".") else ""


def test_every_part_of_the_library_has_a_rule():
  parts = {_part(m) for m in _modules()} - {""}
  assert parts <= set(ALLOWED), f"add a layer rule for {sorted(parts - set(ALLOWED))}"


def test_imports_point_down_the_stack():
  bad = []
  for mod, deps in _graph().items():
    part = _part(mod)
    # `python -m ecgjax.<part>` entry points also use the entry-point plumbing.
    allowed = ALLOWED.get(part, set()) | ({"cli"} if mod.endswith(".__main__") else set())
    for dep in deps:
      other = _part(dep)
      if other and other != part and other not in allowed:
        bad.append(f"{mod} imports {dep}")
  assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))
  # Nothing imports an entry point.
  entry = [f"{m} imports {d}" for m, deps in _graph().items() for d in deps
           if d.endswith(".__main__")]
  assert not entry, "\n".join(entry)


def test_no_import_cycles():
  graph = _graph()
  state: dict[str, int] = {}
  cycles = []

  def visit(node, stack):
    state[node] = 1
    stack.append(node)
    for dep in sorted(graph.get(node, ())):
      if state.get(dep) == 1:
        cycles.append(" -> ".join(stack[stack.index(dep):] + [dep]))
      elif dep not in state:
        visit(dep, stack)
    stack.pop()
    state[node] = 2

  for node in sorted(graph):
    if node not in state:
      visit(node, [])
  assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("part", sorted(LIGHT))
def test_light_parts_do_not_load_heavy_stacks(part):
  mods = {m: p for m, p in _modules().items() if m == f"ecgjax.{part}"
          or m.startswith(f"ecgjax.{part}.")}
  heavy = LIGHT[part]
  bad = []
  for name, path in mods.items():
    for dep in _imports(name, path, set()):
      if dep.split(".")[0] in heavy:
        bad.append(f"{name} imports {dep}")
  assert not bad, "\n".join(sorted(bad))


def test_the_graph_reader_sees_real_edges():
  # Guards the guard: a reader that found no edges would pass every test above.
  graph = _graph()
  assert "ecgjax.leads" in graph["ecgjax.data.transforms"]
  assert "ecgjax.objectives.base" in graph["ecgjax.train.step"]
  assert "ecgjax.data.formats.prepared" in graph["ecgjax.data.prepare"]
  assert _part("ecgjax.objectives.supervised") == "objectives"
