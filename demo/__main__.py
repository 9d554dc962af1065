"""``python -m demo``: the demo without the worker's command line (data in ``$WORKER_DATA_DIR``)."""

import os
import sys

from demo import run_demo

if __name__ == "__main__":
    sys.exit(run_demo(os.environ.get("WORKER_DATA_DIR", ".worker-data")))
