"""Runs ecgjax/apps/tsne.py from a checkout (installed: the `ecgjax-tsne` command)."""

from ecgjax.apps import tsne

if __name__ == "__main__":
  tsne.run()
