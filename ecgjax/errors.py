"""The one exception type that means "the user passed something wrong".

Entry points (`ecgjax.cli.run`) print such an error as one line and exit with status 2; every
other exception is a bug or an environment failure and keeps its traceback. The classes
here subclass ValueError too, so code that caught ValueError before still does.
"""

from __future__ import annotations

from collections.abc import Iterable


class UserError(Exception):
  """A mistake in a flag, config key or value, data spec, path or export; says which."""


class ConfigError(UserError, ValueError):
  """A config key or value that cannot be used (names the key)."""


class SpecError(UserError, ValueError):
  """A data spec that cannot be opened: unknown format or option, bad value, missing path."""


class MissingPathError(SpecError, FileNotFoundError):
  """A data spec, export or checkpoint path that does not exist."""


class ContractMismatchError(UserError, ValueError):
  """Data prepared under another input contract than the one asked for (names the keys)."""


def check_keys(what: str, given: Iterable[str], known: Iterable[str]) -> None:
  """THE unknown-key check (exports, augmentation records, config groups): ConfigError
  "unknown WHAT keys [...]; known: [...]" when `given` has a key outside `known`."""
  known = sorted(known)
  unknown = sorted(set(given) - set(known))
  if unknown:
    raise ConfigError(f"unknown {what} keys {unknown}; known: {known}")
