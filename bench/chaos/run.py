"""``python -m bench.chaos.run``: the long chaos runs, with their figures.

python -m bench.chaos.run                  # all three runs of docs/reliability.md
python -m bench.chaos.run --only kills     # 1,000 jobs, 5 worker kills
python -m bench.chaos.run --only redis     # 1,000 jobs, Redis restarted mid-run
python -m bench.chaos.run --only faults    # a flaky upstream: errors, 429s, stalls, cuts
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from bench.chaos.faults import FaultConfig, run_fault_mix
from bench.chaos.scenario import ChaosConfig, run_chaos
from tests.services import running_valkey


def _kills_or_redis(args: argparse.Namespace, *, kills: int, restarts: int, workers: int) -> bool:
    logs = Path(tempfile.mkdtemp(prefix="relayq-chaos-"))
    config = ChaosConfig(
        database_url=args.database_url or f"sqlite:///{logs / 'relayq.db'}",
        logs=logs,
        jobs=args.jobs,
        kills=kills,
        redis_restarts=restarts,
        workers=workers,
        seed=args.seed,
    )
    report = run_chaos(config)
    print(
        json.dumps(
            {
                "run": "kills" if kills else "redis",
                **asdict(report),
                "ok": report.ok,
                "logs": str(logs),
            },
            indent=2,
        )
    )
    return report.ok


def _faults(args: argparse.Namespace) -> bool:
    logs = Path(tempfile.mkdtemp(prefix="relayq-faults-"))
    with running_valkey() as redis_url:
        report = run_fault_mix(
            FaultConfig(
                database_url=args.database_url or f"sqlite:///{logs / 'relayq.db'}",
                redis_url=redis_url,
                logs=logs,
                jobs=args.jobs // 2,
                # Low enough to bind: the run wants more calls per minute than this.
                rpm=240,
            )
        )
    print(
        json.dumps(
            {"run": "faults", **asdict(report), "ok": report.ok, "logs": str(logs)}, indent=2
        )
    )
    return report.ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos.run")
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--only", choices=["kills", "redis", "faults"], default=None)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args(argv)
    runs = {
        "kills": lambda: _kills_or_redis(args, kills=5, restarts=0, workers=1),
        "redis": lambda: _kills_or_redis(args, kills=0, restarts=1, workers=1),
        "faults": lambda: _faults(args),
    }
    chosen = [args.only] if args.only else list(runs)
    results = [runs[name]() for name in chosen]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
