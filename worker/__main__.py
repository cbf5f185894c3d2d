"""``python -m worker``: start a worker on every provider queue (or those given)."""

from __future__ import annotations

import sys

from worker.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
