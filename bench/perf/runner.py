"""Running the chosen scenarios, each on a fresh stack, and saving what they measured.

Results are written after every scenario (a run cut short keeps what it
measured), then the Markdown report and the plots are made from them.
Everything started is stopped on the way out: at the end, on an error, on
Ctrl-C and on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import signal
import tempfile
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from bench.perf.machine import git_commit, load_average, machine_facts
from bench.perf.processes import ROOT, Processes
from bench.perf.profiling import Profiler
from bench.perf.scenarios import SCENARIOS
from bench.perf.scenarios.base import RunOptions, Scenario, ScenarioResult, new_context
from bench.perf.stack import PerfStack

__all__ = ["main", "parse_options"]

RESULTS = ROOT / "bench" / "perf" / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.perf", description=__doc__)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), default=None)
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (3; quick: 2)")
    parser.add_argument("--soak-seconds", type=float, default=None, help="soak length (120)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--redis", choices=["valkey", "redis8"], default="valkey")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--log-level", default="INFO", help="relayq's RELAYQ_LOG_LEVEL")
    parser.add_argument("--profile", type=Path, default=None, help="py-spy profiles here")
    parser.add_argument(
        "--profile-rate", type=int, default=100, help="py-spy samples per second (100)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json")
    parser.add_argument("--report", type=Path, default=RESULTS / "latest.md")
    parser.add_argument("--plots", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other scenarios already in --json (rerun some, report all)",
    )
    return parser


def parse_options(argv: list[str]) -> tuple[RunOptions, argparse.Namespace]:
    args = _parser().parse_args(argv)
    options = RunOptions(
        quick=args.quick,
        repeat=args.repeat or (2 if args.quick else 3),
        soak_seconds=args.soak_seconds or (60.0 if args.quick else 120.0),
        database=args.database,
        redis=args.redis,
        workers=args.workers,
        log_level=args.log_level,
        profile_dir=args.profile,
        profile_rate=args.profile_rate,
    )
    return options, args


async def _measure(
    scenario: Scenario, stack: PerfStack, options: RunOptions, profiler: Profiler
) -> ScenarioResult:
    ctx = new_context(stack, options, profiler)
    try:
        return await scenario.run(ctx)
    finally:
        await ctx.session.close()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """The harness's own garbage collector off while a scenario measures.

    Full collections of the harness's heap took 60 to 160 ms during the fan-out
    scenario of a whole run (seen through ``gc.callbacks``), and every token in
    flight then read as that much later: the instrument's pause, not relayq's
    (nor the direct call's). Objects go when their last reference does, as
    always; reference cycles wait for the collection after the scenario.
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()


def _run_one(
    scenario: Scenario, options: RunOptions, logs: Path, processes: Processes
) -> dict[str, Any]:
    import uvloop  # the harness's own loop: the cheaper it is, the less it takes from the stack

    scenario_logs = logs / scenario.name
    scenario_logs.mkdir(parents=True, exist_ok=True)
    stack = PerfStack(scenario.stack(options), logs=scenario_logs, processes=processes)
    profiler = Profiler(options.profile_dir, rate=options.profile_rate)
    started = time.time()
    entry: dict[str, Any] = {
        "title": scenario.title,
        "logs": str(scenario_logs),
        # The tree can change between scenarios (others commit while a run goes on).
        "git_commit": git_commit(),
    }
    if not scenario.needs_stack:
        entry["status"] = "not implemented"
        entry["notes"] = [scenario.run.__doc__ or ""]
        return entry
    try:
        stack.start()
        entry["stack"] = stack.describe()
        with _collector_paused(), asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(_measure(scenario, stack, options, profiler))
        entry.update(
            status=result.status,
            figures=[f.as_dict() for f in result.figures],
            data=result.data,
            notes=result.notes,
        )
    except Exception as exc:
        entry.update(status="error", error=f"{type(exc).__name__}: {exc}")
        entry["traceback"] = traceback.format_exc()
        print(entry["traceback"], flush=True)
    finally:
        if "stack" in entry:  # again: a scenario may have started more workers
            entry["stack"] = stack.describe()
        stack.stop()
    entry["seconds"] = round(time.time() - started, 1)
    entry["profiles"] = [str(p) for p in profiler.recorded]
    entry["load_average_after"] = load_average()
    return entry


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str]) -> int:
    options, args = parse_options(argv)
    chosen = args.only or list(SCENARIOS)
    logs = Path(tempfile.mkdtemp(prefix="relayq-perf-"))
    processes = Processes()
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    results: dict[str, Any] = {
        "command": "python -m bench.perf " + " ".join(argv),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "machine": machine_facts(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "logs": str(logs),
        "scenarios": {},
    }
    if args.merge and args.json.exists():
        results = _merged(json.loads(args.json.read_text()), results)
    print(f"logs in {logs}", flush=True)
    try:
        for name in chosen:
            print(f"== {name}", flush=True)
            entry = _run_one(SCENARIOS[name], options, logs, processes)
            entry["command"] = "python -m bench.perf " + " ".join(argv)
            results["scenarios"][name] = entry
            _save(results, args.json)
            _print_figures(results["scenarios"][name])
    finally:
        processes.stop_all()
        results["machine"]["load_average_at_end"] = load_average()
        _save(results, args.json)
    from bench.perf.report import write_outputs

    write_outputs(results, report=args.report, plots=args.plots)
    print(f"results: {args.json}\nreport: {args.report}", flush=True)
    failed = [n for n, s in results["scenarios"].items() if s.get("status") == "error"]
    return 1 if failed else 0


def _merged(earlier: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """``earlier`` results, to which this run's scenarios will be added (replacing any
    of the same name); each scenario keeps the command that measured it."""
    for entry in earlier["scenarios"].values():
        entry.setdefault("command", earlier["command"])
    earlier["command"] = f"{earlier['command']}; then {now['command']}"
    earlier.setdefault("reruns", []).append(
        {"command": now["command"], "started_at": now["started_at"], "machine": now["machine"]}
    )
    return earlier


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _save(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_finite(results), indent=1, allow_nan=False, default=str)
    path.write_text(text + "\n")


def _print_figures(entry: dict[str, Any]) -> None:
    for figure in entry.get("figures", []):
        print(
            f"  {figure['name']}: relayq {figure['relayq']} direct {figure['direct']} "
            f"{figure['unit']}, ratio {figure['ratio']}, added {figure['added']}, "
            f"passed {figure['passed']}",
            flush=True,
        )
    if entry.get("status") != "done":
        print(f"  status: {entry.get('status')} {entry.get('error', '')}", flush=True)
