"""Runs ecgjax/apps/pretrain.py from a checkout (installed: the `ecgjax-pretrain` command)."""

from ecgjax.apps import pretrain

if __name__ == "__main__":
  pretrain.run()
