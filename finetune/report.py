"""Runs ecgjax/apps/report.py from a checkout (installed: the `ecgjax-report` command)."""

from ecgjax.apps import report

if __name__ == "__main__":
  report.run()
