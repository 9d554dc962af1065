"""Entry point: ``python worker/main.py [run|migrate|demo|serve|check|status] ...``, and the seed's
Python API: ``from worker.main import ReminderWorker`` (:mod:`worker.api`).

Run as a script, Python puts ``worker/`` itself first on sys.path, where our modules would shadow
the standard library's and ``import worker`` would fail; the repository root goes there instead.
"""

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from worker.api import ReminderWorker
from worker.cli import main

__all__ = ["ReminderWorker", "main"]

if __name__ == "__main__":
    sys.exit(main())
