"""Runs ecgjax/apps/finetune.py from a checkout (installed: the `ecgjax-finetune` command)."""

from ecgjax.apps import finetune

if __name__ == "__main__":
  finetune.run()
