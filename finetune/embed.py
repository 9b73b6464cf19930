"""Runs ecgjax/apps/embed.py from a checkout (installed: the `ecgjax-embed` command)."""

from ecgjax.apps import embed

if __name__ == "__main__":
  embed.run()
