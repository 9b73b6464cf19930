"""Data spec strings (`FORMAT:PATH?key=value&...`) and the registry of formats.

One grammar names every data set in configs and on the command line:

  synthetic:2000?seed=1&fs=250&seconds=10
  ptbxl:/data/ptbxl?fs=500&labels=superclass&folds=1-7
  npy:/data/signals.npy?fs=250
  /data/signals.npy              (no prefix: format "auto")

Values may be percent-encoded. Each format declares its options once, with a
parser and a default, through `register_format`; unknown keys are errors that
name the key, the spec and the allowed keys, so a typo never falls back to a
default silently.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
import dataclasses
import re
from typing import Any
import urllib.parse

from ecgjax import leads as leads_lib
from ecgjax.errors import SpecError

# Two or more characters, so a Windows drive letter ("C:\data") reads as a path.
_FORMAT_RE = re.compile(r"^([A-Za-z][A-Za-z0-9_\-]+):(.*)$", re.DOTALL)
# Characters left readable in str(spec); everything else is percent-encoded.
_SAFE_PATH = "/:~._-+@,="
_SAFE_VALUE = ",-._~:/+@"


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """A parsed data spec: format, path (record count for synthetic), raw options."""

  format: str
  path: str
  options: dict[str, str] = dataclasses.field(default_factory=dict)

  def __hash__(self) -> int:
    return hash((self.format, self.path, tuple(sorted(self.options.items()))))

  def __str__(self) -> str:
    path = urllib.parse.quote(self.path, safe=_SAFE_PATH)
    if self.format != "auto" or not path or _FORMAT_RE.match(path):
      head = f"{self.format}:{path}"
    else:
      head = path
    if not self.options:
      return head
    query = "&".join(
        f"{urllib.parse.quote(k, safe='_-.')}="
        f"{urllib.parse.quote(v, safe=_SAFE_VALUE)}"
        for k, v in self.options.items()
    )
    return f"{head}?{query}"

  def replace(self, **options: str) -> DataSpec:
    """Returns a copy with some options set (values as strings)."""
    merged = dict(self.options)
    merged.update({k: str(v) for k, v in options.items()})
    return DataSpec(self.format, self.path, merged)


def parse_spec(spec: str | DataSpec) -> DataSpec:
  """Parses `FORMAT:PATH?key=value&...`; a bare path means format "auto"."""
  if isinstance(spec, DataSpec):
    return spec
  if not isinstance(spec, str):
    raise TypeError(f"data spec must be a string, got {type(spec).__name__}")
  text = spec.strip()
  if not text:
    raise SpecError("empty data spec")
  m = _FORMAT_RE.match(text)
  fmt, rest = (m.group(1).lower(), m.group(2)) if m else ("auto", text)
  raw_path, _, query = rest.partition("?")
  options: dict[str, str] = {}
  for part in query.split("&") if query else ():
    if not part:
      continue  # Tolerate "a=1&&b=2" and a trailing "&".
    key, eq, value = part.partition("=")
    key = urllib.parse.unquote(key).strip()
    if not eq or not key:
      raise SpecError(
          f"data spec {spec!r}: option {part!r} is not of the form key=value"
      )
    if key in options:
      raise SpecError(f"data spec {spec!r}: option {key!r} given twice")
    options[key] = urllib.parse.unquote(value)
  return DataSpec(fmt, urllib.parse.unquote(raw_path), options)


def parse_folds(text: str) -> tuple[int, ...]:
  """Parses "1-7", "1,3,5" or "1-3,5" into a sorted tuple of fold numbers."""
  folds: set[int] = set()
  for part in str(text).split(","):
    part = part.strip()
    m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
    if not m:
      raise ValueError(
          f"bad folds {text!r}: expected numbers and ranges like 1-7, 1,3,5 "
          "or 1-3,5"
      )
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if hi < lo:
      raise ValueError(f"bad folds {text!r}: empty range {part!r}")
    folds.update(range(lo, hi + 1))
  return tuple(sorted(folds))


def positive_float(text: str) -> float:
  """Parses a finite number > 0."""
  value = float(text)
  if not value > 0 or value == float("inf"):
    raise ValueError(f"expected a number > 0, got {text!r}")
  return value


def positive_int(text: str) -> int:
  """Parses an integer > 0."""
  value = int(text)
  if value <= 0:
    raise ValueError(f"expected an integer > 0, got {text!r}")
  return value


def nonnegative_int(text: str) -> int:
  """Parses an integer >= 0."""
  value = int(text)
  if value < 0:
    raise ValueError(f"expected an integer >= 0, got {text!r}")
  return value


@dataclasses.dataclass(frozen=True)
class Option:
  """One key a format accepts: parser from string, default, one-line help."""

  parse: Callable[[str], Any]
  default: Any = None
  help: str = ""


# Accepted by every format and applied generically by `open_source`.
COMMON_OPTIONS: dict[str, Option] = {
    "leads": Option(
        leads_lib.parse_leads, None,
        "leads the records carry, in this order (absent ones: zeros, mask 0)"),
    "folds": Option(parse_folds, None, "keep only records of these folds"),
}


@dataclasses.dataclass(frozen=True)
class FormatInfo:
  """A registered format: its factory and the options it declares."""

  name: str
  factory: Callable[..., Any]
  options: Mapping[str, Option]
  help: str = ""
  # detect(path) -> True when `auto:PATH` (or a bare path) is in this format.
  detect: Callable[[str], bool] | None = None
  # False for formats whose "path" is not a file or directory ("synthetic:1000").
  reads_path: bool = True

  @property
  def all_options(self) -> dict[str, Option]:
    """Common options overlaid with this format's own declarations."""
    return {**COMMON_OPTIONS, **self.options}


_REGISTRY: dict[str, FormatInfo] = {}


def register_format(
    name: str,
    options: Mapping[str, Option] | None = None,
    help: str = "",  # pylint: disable=redefined-builtin
    detect: Callable[[str], bool] | None = None,
    reads_path: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Decorator registering `factory(spec, **options) -> Source` for a format.

  The factory receives the options it declares, parsed (defaults filled in).
  Declaring a common option (e.g. "leads") hands it to the factory, which then
  owns its meaning; otherwise common options are applied by `open_source`.
  `detect(path)` lets `auto:PATH` recognise the format (cheap checks only); `reads_path`
  False says the path is not a file or directory (so `open_source` does not check it exists).
  """
  name = name.lower()

  def decorator(factory: Callable[..., Any]) -> Callable[..., Any]:
    if name in _REGISTRY and _REGISTRY[name].factory is not factory:
      raise ValueError(f"data format {name!r} is registered twice")
    _REGISTRY[name] = FormatInfo(name, factory, dict(options or {}), help, detect, reads_path)
    return factory

  return decorator


def known_formats() -> tuple[str, ...]:
  """Names of the registered formats, sorted."""
  return tuple(sorted(_REGISTRY))


def get_format(name: str) -> FormatInfo:
  """Looks up a registered format; the error lists the known ones."""
  try:
    return _REGISTRY[name.lower()]
  except KeyError:
    raise SpecError(
        f"unknown data format {name!r}; known formats: "
        f"{', '.join(known_formats()) or '(none registered)'}"
    ) from None


def parse_options(
    spec: DataSpec, options: Mapping[str, Option]
) -> dict[str, Any]:
  """Parses `spec.options` against declared options; every declared key gets a value."""
  unknown = [k for k in spec.options if k not in options]
  if unknown:
    raise SpecError(
        f"data spec {str(spec)!r}: unknown option {unknown[0]!r} for format "
        f"{spec.format!r}; allowed: {', '.join(sorted(options))}"
    )
  parsed = {}
  for key, opt in options.items():
    if key not in spec.options:
      parsed[key] = opt.default
      continue
    raw = spec.options[key]
    try:
      parsed[key] = opt.parse(raw)
    except (ValueError, TypeError) as e:
      raise SpecError(
          f"data spec {str(spec)!r}: bad value {key}={raw!r}: {e}"
      ) from None
  return parsed
