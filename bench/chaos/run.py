"""``python -m bench.chaos.run``: the long chaos runs, with their figures.

python -m bench.chaos.run                  # all four runs of docs/reliability.md
python -m bench.chaos.run --only kills     # 1,000 jobs, 5 kills: of a machine, then of a process
python -m bench.chaos.run --only kills --kill-mode process    # one kill mode only
python -m bench.chaos.run --only redis     # 1,000 jobs, Redis restarted mid-run
python -m bench.chaos.run --only faults    # a flaky upstream: errors, 429s, stalls, cuts

The kills and redis runs use the recovery settings relayq ships (lease,
visibility timeout, reconcile interval, enqueue grace: ``WorkerSettings``'
defaults) and then watch until the broker has redelivered what the dead
workers held; ``--quick-recovery`` runs them on the short ones the test
suite uses (a 10 s lease, a 20 s visibility timeout), as the runs before
the supervisor's hand-back did.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from bench.chaos.faults import FaultConfig, run_fault_mix
from bench.chaos.scenario import ChaosConfig, KillMode, run_chaos
from tests.services import running_valkey


def _kills_or_redis(
    args: argparse.Namespace, *, kills: int, restarts: int, mode: KillMode = KillMode.MACHINE
) -> bool:
    logs = Path(tempfile.mkdtemp(prefix="relayq-chaos-"))
    config = ChaosConfig(
        database_url=args.database_url or f"sqlite:///{logs / 'relayq.db'}",
        logs=logs,
        jobs=args.jobs,
        kills=kills,
        kill_mode=mode,
        redis_restarts=restarts,
        seed=args.seed,
        watch_redelivery=True,
        min_uptime_seconds=args.min_uptime,
    )
    if not args.quick_recovery:
        config = config.on_shipped_recovery()
    report = run_chaos(config)
    print(
        json.dumps(
            {
                "run": f"kills ({mode.value})" if kills else "redis",
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
    parser.add_argument(
        "--kill-mode",
        choices=[mode.value for mode in KillMode],
        default=None,
        help="machine: SIGKILL the worker with its supervisor; process: its Celery process "
        "alone (the supervisor hands back its jobs); default: a run of each",
    )
    parser.add_argument(
        "--quick-recovery",
        action="store_true",
        help="a 10 s lease and a 20 s visibility timeout instead of the shipped settings",
    )
    parser.add_argument(
        "--min-uptime",
        type=float,
        default=5.0,
        help="seconds a worker back from a kill runs before the next kill (0: the kill lands "
        "as soon as it is ready if its moment has passed, as in a crash loop)",
    )
    args = parser.parse_args(argv)
    modes = [KillMode(args.kill_mode)] if args.kill_mode else list(KillMode)
    runs: dict[str, list[Callable[[], bool]]] = {
        "kills": [
            functools.partial(_kills_or_redis, args, kills=5, restarts=0, mode=mode)
            for mode in modes
        ],
        "redis": [functools.partial(_kills_or_redis, args, kills=0, restarts=1)],
        "faults": [functools.partial(_faults, args)],
    }
    chosen = [args.only] if args.only else list(runs)
    results = [run() for name in chosen for run in runs[name]]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
