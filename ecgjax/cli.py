"""Running an entry point: a user's mistake is one line on stderr and exit status 2.

`run(main)` replaces `absl.app.run(main)`. Flag parsing errors (an unknown flag, a bad value,
a misspelt `--config.key`, a config file that does not exist or rejects its arguments) and any
`ecgjax.errors.UserError` raised by `main` print `PROG: error: MESSAGE` and exit 2. Every
other exception keeps its traceback: it is a bug, not a mistake.

Imports only absl (grain's spawned workers re-import entry scripts, and with them this module).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import os
import re
import sys
from typing import Any, NoReturn

from absl import app
from absl import flags

from ecgjax.errors import ConfigError, SpecError, UserError

__all__ = ["ConfigError", "SpecError", "UserError", "fail", "run"]


def program_name() -> str:
  """How the user ran us: "pretrain/main.py" style basename, or "python -m ecgjax.data"."""
  path = sys.argv[0] if sys.argv and sys.argv[0] else "ecgjax"
  if os.path.basename(path) == "__main__.py":
    parts = os.path.normpath(os.path.dirname(os.path.abspath(path))).split(os.sep)
    if "ecgjax" in parts:
      return "python -m " + ".".join(parts[len(parts) - 1 - parts[::-1].index("ecgjax"):])
  return os.path.basename(path)


def fail(message: str, prog: str | None = None) -> NoReturn:
  """Prints `PROG: error: MESSAGE` (one line) and exits with status 2."""
  prog = prog or program_name()
  one_line = " ".join(str(message).split())
  sys.stderr.write(f"{prog}: error: {one_line}\n")
  sys.stderr.flush()
  sys.exit(2)


def _config_overrides(argv: Sequence[str]) -> list[str]:
  # "--config.a.b=1" and "--config.a.b 1" both name the key "a.b".
  out = []
  for arg in argv[1:]:
    m = re.match(r"--?(\w+)\.([\w.]+)", arg)
    if m:
      out.append(f"{m.group(1)}.{m.group(2)}")
  return out


def _unknown_key(error: BaseException, argv: Sequence[str]) -> str | None:
  """ml_collections' AttributeError/KeyError for a misspelt override, as one sentence."""
  text = str(error.args[0] if error.args else error).strip("'\"")
  text = text.replace("\\'", "'").replace("\\n", "\n")
  key, _, hint = text.partition("\n")
  key = key.strip("'\" ")
  if not re.fullmatch(r"[\w]+", key):
    return None
  flag = next((f for f in _config_overrides(argv) if f.split(".")[-1] == key
               or f".{key}." in f".{f}."), None)
  m = re.search(r'Did you mean "([^"]+)"', hint)
  where = f"--{flag}" if flag else f"config key {key!r}"
  suggestion = f"; did you mean {m.group(1)!r}?" if m else ""
  return f"{where}: config has no key {key!r}{suggestion}"


def _flag_error_message(error: BaseException, argv: Sequence[str]) -> str:
  if isinstance(error, flags.Error):
    text = str(error)  # absl's own message names the flag and its value
    head, marker, trace = text.partition("Error whilst parsing config file:")
    if marker:
      # ml_collections pastes the config file's whole traceback into the message: the
      # exception's own line (its last) is what the user needs.
      last = [ln for ln in trace.strip().splitlines() if ln.strip()][-1].strip()
      return head.strip() + " " + re.sub(r"^\w+(Error|Exception): ", "", last)
    return text
  if isinstance(error, (AttributeError, KeyError)):
    msg = _unknown_key(error, argv)
    if msg:
      return msg
  cause = error
  # absl wraps the config file's own exception (e.g. ValueError("unknown variant")).
  while cause.__cause__ is not None or cause.__context__ is not None:
    nxt = cause.__cause__ or cause.__context__
    if isinstance(nxt, (AttributeError, KeyError)) and _unknown_key(nxt, argv):
      return _unknown_key(nxt, argv)
    if isinstance(nxt, (flags.Error, ValueError, TypeError, OSError)):
      cause = nxt
      continue
    break
  return str(cause) if cause is not error else str(error)


def _load_config(name: str, argv: Sequence[str]) -> Any:
  """Loads the config file `--NAME` names again (only to explain a failed override)."""
  from ml_collections.config_flags import config_flags  # pylint: disable=g-import-not-at-top
  value = None
  for i, arg in enumerate(argv[1:], 1):
    if arg.startswith(f"--{name}="):
      value = arg.split("=", 1)[1]
    elif arg == f"--{name}" and i + 1 < len(argv):
      value = argv[i + 1]
  if value is None:
    return None
  return config_flags.ConfigFileFlagParser(name, lock_config=False).parse(value)


def _bad_override(argv: Sequence[str]) -> str | None:
  """The first `--config.a.b` override whose path does not lead to a key, said plainly."""
  loaded: dict[str, Any] = {}
  for path in _config_overrides(argv):
    name, *keys = path.split(".")
    if name not in loaded:
      loaded[name] = _load_config(name, argv)
    if loaded[name] is None:
      continue
    node, walked = loaded[name], name
    for key in keys:
      if not hasattr(node, "keys"):
        return (f"--{path}: {walked} is a {type(node).__name__} ({node!r}), not a group of "
                f"keys, so it has no key {key!r}")
      if key not in node:
        close = [k for k in node.keys() if k.lower() == key.lower() or k.startswith(key[:3])]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"--{path}: {walked} has no key {key!r}{hint}"
      node, walked = node[key], f"{walked}.{key}"
  return None


def _is_config_flag(flag: flags.Flag) -> bool:
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  return config_flags.config_flags.is_config_flag(flag)


def _check_config_files() -> None:
  # config_flags defers a config file that failed to load until its value is used.
  for name in list(flags.FLAGS):
    flag = flags.FLAGS[name]
    if not _is_config_flag(flag):
      continue
    if type(flag.value).__name__ == "_ErrorConfig":
      try:
        flag.value.keys()
      except OSError as e:
        detail = str(e).strip().splitlines()[-1].strip()
        fail(f"--{name}: cannot load the config file: {detail}")


def builtin_config(name: str) -> str | None:
  """The path of `configs/<name>.py` as shipped with ecgjax, or None.

  A wheel installs the config files as the package data `ecgjax._configs`; a checkout (or an
  editable install) has them in `configs/` beside the package."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  dirs = []
  try:
    spec = importlib.util.find_spec("ecgjax._configs")
  except (ImportError, ValueError):
    spec = None
  if spec is not None and spec.submodule_search_locations:
    dirs += list(spec.submodule_search_locations)
  dirs.append(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "configs"))
  for d in dirs:
    path = os.path.join(d, f"{name}.py")
    if name != "__init__" and os.path.isfile(path):
      return path
  return None


def resolve_config_paths(argv: Sequence[str]) -> list[str]:
  """`--config configs/NAME.py[:args]` naming no file here -> the shipped copy of that config,
  so the README's commands run the same from a checkout and from an installed wheel."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg == "--config" and i + 1 < len(out):
      j, value, prefix = i + 1, out[i + 1], ""
    elif arg.startswith("--config="):
      j, value, prefix = i, arg[len("--config="):], "--config="
    else:
      continue
    path, sep, args = value.partition(":")
    head, base = os.path.split(path)
    if os.path.exists(path) or head not in ("", "configs") or not base.endswith(".py"):
      continue
    if (found := builtin_config(base[:-len(".py")])) is not None:
      out[j] = prefix + found + sep + args
  return out


def _parse_flags(argv: list[str]) -> list[str]:
  argv = resolve_config_paths(argv)
  try:
    rest = flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
    # Mistakes in the command line or the config it names; the config file's own bugs
    # (SyntaxError, NameError) are not caught and keep their traceback.
    if isinstance(e, (AttributeError, KeyError, TypeError)):
      try:
        bad = _bad_override(argv)
      except Exception:  # pylint: disable=broad-except  (a best-effort diagnosis only)
        bad = None
      if bad:
        fail(bad)
    fail(_flag_error_message(e, argv))
  _check_config_files()
  return rest


def run(main: Callable[[list[str]], Any]) -> None:
  """`absl.app.run(main)` with user mistakes reported as one line and exit status 2."""

  def guarded(argv: list[str]) -> Any:
    try:
      return main(argv)
    except UserError as e:
      fail(str(e))

  app.run(guarded, flags_parser=_parse_flags)
