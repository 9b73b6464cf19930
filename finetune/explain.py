"""Runs ecgjax/apps/explain.py from a checkout (installed: the `ecgjax-explain` command)."""

from ecgjax.apps import explain

if __name__ == "__main__":
  explain.run()
