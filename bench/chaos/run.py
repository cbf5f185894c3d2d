"""``python -m bench.chaos.run``: the long chaos runs, with their figures.

python -m bench.chaos.run                 # 1,000 jobs, 5 worker kills, then a Redis restart run
python -m bench.chaos.run --jobs 200 --kills 2 --redis-restarts 1
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.chaos.scenario import ChaosConfig, ChaosReport, run_chaos


def _run(args: argparse.Namespace, *, kills: int, restarts: int, workers: int) -> ChaosReport:
    logs = Path(tempfile.mkdtemp(prefix="relayq-chaos-"))
    database_url = args.database_url or f"sqlite:///{logs / 'relayq.db'}"
    config = ChaosConfig(
        database_url=database_url,
        logs=logs,
        jobs=args.jobs,
        kills=kills,
        redis_restarts=restarts,
        workers=workers,
        seed=args.seed,
    )
    report = run_chaos(config)
    print(json.dumps({**asdict(report), "ok": report.ok, "logs": str(logs)}, indent=2))
    return report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.run")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=None)
    parser.add_argument("--redis-restarts", type=int, default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args(argv)
    if args.kills is None and args.redis_restarts is None:
        runs = [(5, 0, 1), (0, 1, 2)]  # the two scenarios of docs/reliability.md
    else:
        runs = [(args.kills or 0, args.redis_restarts or 0, 2 if args.redis_restarts else 1)]
    reports = [_run(args, kills=k, restarts=r, workers=w) for k, r, w in runs]
    return 0 if all(report.ok for report in reports) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
