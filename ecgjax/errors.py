"""The one exception type that means "the user passed something wrong".

Entry points (`ecgjax.cli.run`) print such an error as one line and exit with status 2; every
other exception is a bug or an environment failure and keeps its traceback. The classes
here subclass ValueError too, so code that caught ValueError before still does.
"""

from __future__ import annotations


class UserError(Exception):
  """A mistake in a flag, config key or value, data spec, path or export; says which."""


class ConfigError(UserError, ValueError):
  """A config key or value that cannot be used (names the key)."""


class SpecError(UserError, ValueError):
  """A data spec that cannot be opened: unknown format or option, bad value, missing path."""


class MissingPathError(SpecError, FileNotFoundError):
  """A data spec, export or checkpoint path that does not exist."""
