"""Packaging beyond pyproject.toml: the config files in configs/ ship as ecgjax._configs.

They stay at the top of the checkout, where `--config configs/<name>.py` names them; an
installed ecgjax finds its copy through `ecgjax.cli.builtin_config` when no such file is here.
"""

from setuptools import find_packages, setup

setup(packages=find_packages(include=["ecgjax", "ecgjax.*"]) + ["ecgjax._configs"],
      package_dir={"ecgjax._configs": "configs"})
