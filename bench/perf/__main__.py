"""``python -m bench.perf``: run the benchmarks, write the JSON results, the report, the plots.

python -m bench.perf                           # every scenario, full size
python -m bench.perf --quick                   # smaller runs, two repetitions
python -m bench.perf --only throughput --only fanout
python -m bench.perf --only postgres-workers      # PostgreSQL, one worker process, then two
python -m bench.perf --only soak --soak-seconds 600
python -m bench.perf --only throughput --profile /tmp/relayq-profiles
"""

from __future__ import annotations

import sys

from bench.perf.runner import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
