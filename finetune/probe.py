"""Runs ecgjax/apps/probe.py from a checkout (installed: the `ecgjax-probe` command)."""

from ecgjax.apps import probe

if __name__ == "__main__":
  probe.run()
