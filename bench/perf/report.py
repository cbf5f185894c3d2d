"""The Markdown report of a run, made from its JSON results alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["figures_table", "render", "workers_table", "write_outputs"]


def _number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _ratio(figure: dict[str, Any]) -> str:
    value = figure.get("ratio")
    if value is None:
        return "—"
    if figure["unit"].endswith("/s"):
        return f"{100 * value:.0f} % of ceiling"
    return f"{value:.2f}x"


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "**miss**", None: "—"}[passed]


def figures_table(results: dict[str, Any]) -> str:
    """Every figure of the run: relayq, the direct call, ratio, added, target, verdict."""
    rows = [
        "| scenario | figure | relayq | direct (ceiling) | ratio | added | target | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in results["scenarios"].items():
        figures = entry.get("figures") or []
        if not figures:
            status = entry.get("status", "?")
            error = entry.get("error", "")
            rows.append(f"| {name} | {status} {error} | | | | | | |")
        for figure in figures:
            unit = figure["unit"]
            added = figure.get("added")
            rows.append(
                f"| {name} | {figure['name']} | {_number(figure['relayq'])} {unit} "
                f"| {_number(figure['direct'])} | {_ratio(figure)} "
                f"| {'—' if added is None else _number(added) + ' ' + unit} "
                f"| {figure['target'] or '—'} | {_verdict(figure['passed'])} |"
            )
    return "\n".join(rows)


_CPU_KEYS = ("relayq_cpu_ms", "relayq_own_cpu_ms", "client_cpu_ms")


def workers_table(results: dict[str, Any]) -> str:
    """Throughput on PostgreSQL by worker processes (``postgres-workers``); "" if not run."""
    entry = results["scenarios"].get("postgres-workers") or {}
    by_workers: dict[str, dict[str, Any]] = (entry.get("data") or {}).get("by_workers") or {}
    if not by_workers:
        return ""
    rows = [
        "| worker processes | relayq | direct (ceiling) | ratio | CPU per job, all processes "
        "| relayq's own processes | harness client |",
        "|---|---|---|---|---|---|---|",
    ]
    for count in sorted(by_workers, key=int):
        row = by_workers[count]
        share = row.get("ratio")
        cells = [
            count,
            f"{_number(row.get('relayq'))} jobs/s",
            f"{_number(row.get('direct'))} jobs/s",
            "—" if share is None else f"{100 * share:.0f} % of ceiling",
            *(f"{_number(row.get(key))} ms" for key in _CPU_KEYS),
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _machine(results: dict[str, Any]) -> str:
    machine = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    return "\n".join(
        [
            f"- {machine['cores']} cores, {machine['cpu']}, {_number(machine['memory_mb'], 0)} MiB",
            f"- {machine['os']}; Python {machine['python']}",
            f"- {packages}",
            f"- relayq commit {machine.get('git_commit')}",
            f"- load average at start {machine['load_average_at_start']}, "
            f"at end {machine.get('load_average_at_end')}",
        ]
    )


def _notes(results: dict[str, Any]) -> str:
    lines = []
    for name, entry in results["scenarios"].items():
        for figure in entry.get("figures") or []:
            if figure.get("note"):
                lines.append(f"- {name}, {figure['name']}: {figure['note']}")
        for note in entry.get("notes") or []:
            lines.append(f"- {name}: {note}")
    return "\n".join(lines)


def _settings(results: dict[str, Any]) -> str:
    lines = []
    for name, entry in results["scenarios"].items():
        stack = entry.get("stack")
        if not stack:
            continue
        settings = stack["settings"]
        wanted = {
            k: v
            for k, v in settings.items()
            if k.startswith("RELAYQ_WORKER") or k in {"RELAYQ_DATABASE_URL", "RELAYQ_REDIS_URL"}
        }
        shown = ", ".join(f"`{k}={v}`" for k, v in wanted.items())
        start = results["machine"].get("git_commit") or "?"
        own = entry.get("git_commit")
        commit = own[:7] if own else f"{start[:7]} at the run's start"
        command = entry.get("command", results["command"])
        workers = f"{stack['workers']} worker process(es)"
        if stack.get("most_workers", 0) > stack["workers"]:
            workers += f", {stack['most_workers']} at most"
        lines.append(f"- {name}: {workers}; {shown}; commit {commit}; `{command.strip()}`")
    return "\n".join(lines)


def _section(title: str, body: str) -> list[str]:
    return [f"## {title}\n\n{body}"] if body else []


def render(results: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    return (
        "\n\n".join(
            [
                "# relayq benchmark run",
                f"`{results['command']}`, started {results['started_at']}.",
                "## Machine\n\n" + _machine(results),
                "## Figures\n\n" + figures_table(results),
                *_section("Worker processes on PostgreSQL", workers_table(results)),
                "## Notes\n\n" + (_notes(results) or "none"),
                "## Settings per scenario\n\n" + _settings(results),
            ]
        )
        + "\n"
    )


def write_outputs(results: dict[str, Any], *, report: Path, plots: Path) -> None:
    """Write the Markdown report and the plots (when the run has their data)."""
    from bench.perf.plots import write_plots

    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render(results))
    write_plots(results, plots)
