"""Alias of `ecgjax.data.formats.synthetic` (the built-in synthetic 12-lead ECGs)."""

from ecgjax.data.formats.synthetic import *  # noqa: F401,F403
from ecgjax.data.formats.synthetic import (  # noqa: F401
    LABEL_NAMES,
    SyntheticSource,
    generate_record,
)
