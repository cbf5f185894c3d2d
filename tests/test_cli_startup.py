"""How the ``relayq`` command starts: what it has imported before a command runs.

It used to import SQLAlchemy, Alembic, the store, the settings and the batch
schemas before parsing its arguments: ``relayq --help`` took 1 s on an idle
machine and 2 to 5 s on a loaded one. Timings are never asserted here (the machines are shared
and noisy); these tests assert the cause instead, the modules a fresh
process has loaded, and put the ``-X importtime`` figure in their messages.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.services import free_port
from tests.stack import ROOT

# What no command needs before it runs. Each command imports its own.
HEAVY = (
    "sqlalchemy",
    "alembic",
    "celery",
    "kombu",
    "fastapi",
    "starlette",
    "uvicorn",
    "redis",
    "aiohttp",
    "httpx",
    "pydantic_settings",
    "asyncio",
)

# Imports relayq.cli.main, runs it with the arguments given (if any), then writes
# the names of the modules loaded by then to the report file.
_PROBE = """
import json, sys
args, report = json.loads(sys.argv[1]), sys.argv[2]
try:
    import relayq.cli.main
    if args is not None:
        sys.argv = ["relayq", *args]
        relayq.cli.main.main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
finally:
    with open(report, "w") as out:
        json.dump(sorted(sys.modules), out)
sys.exit(code)
"""


@dataclass
class Start:
    """One fresh ``relayq`` process: its result, the modules it loaded, its import times."""

    result: subprocess.CompletedProcess[str]
    modules: set[str]
    cli_ms: float
    all_ms: float

    def loaded(self, *packages: str) -> list[str]:
        return sorted(p for p in packages if any(_within(m, p) for m in self.modules))

    def outside_cli(self) -> list[str]:
        """relayq's modules other than the CLI's own (and the package's empty ``__init__``)."""
        return sorted(
            m
            for m in self.modules
            if _within(m, "relayq") and not _within(m, "relayq.cli") and m != "relayq"
        )

    def figures(self) -> str:
        return (
            f"-X importtime: relayq.cli.main {self.cli_ms:.0f} ms cumulative, "
            f"every import of the process {self.all_ms:.0f} ms"
        )


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(f"{package}.")


def _start(tmp_path: Path, args: list[str] | None) -> Start:
    report = tmp_path / "modules.json"
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _PROBE, json.dumps(args), str(report)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    cli = total = 0
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # a top-level import, not one nested in another
            total += int(cumulative)
            cli += int(cumulative) if name.strip() == "relayq.cli.main" else 0
    return Start(result, set(json.loads(report.read_text())), cli / 1000, total / 1000)


def test_importing_the_cli_loads_none_of_what_its_commands_need(tmp_path: Path) -> None:
    start = _start(tmp_path, None)

    assert start.result.returncode == 0, start.result.stderr[-2000:]
    assert start.loaded(*HEAVY, "pydantic") == [], start.figures()
    assert start.outside_cli() == [], start.figures()
    assert start.loaded("rich.table", "rich.progress") == [], start.figures()


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["batch", "--help"],
        ["batch", "status", "--help"],
        ["batch", "submit", "--help"],
        ["keys", "create", "--help"],
        ["db", "upgrade", "--help"],
    ],
    ids=" ".join,
)
def test_help_loads_none_of_what_the_commands_need(tmp_path: Path, args: list[str]) -> None:
    """pydantic may load: typer (0.29) checks a command's parameters with it."""
    start = _start(tmp_path, args)

    assert start.result.returncode == 0, start.result.stderr[-2000:]
    assert "Usage: relayq" in start.result.stdout
    assert start.loaded(*HEAVY) == [], start.figures()
    assert start.outside_cli() == [], start.figures()


def test_a_batch_command_loads_its_client_but_not_the_database_or_the_queue(
    tmp_path: Path,
) -> None:
    """``relayq batch status`` needs httpx and the batch schemas, not SQL or Celery;
    against an API that is not there it fails at once, saying so."""
    api_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there any more

    start = _start(tmp_path, ["batch", "status", "batch_x", "--api-key", "k", "--api-url", api_url])

    assert start.result.returncode == 5, start.result.stderr[-2000:]
    assert f"error: cannot reach the API at {api_url}" in start.result.stderr
    assert start.loaded("httpx", "relayq.schemas.batches") == ["httpx", "relayq.schemas.batches"]
    absent = (
        *("sqlalchemy", "alembic", "celery", "kombu", "fastapi", "uvicorn", "relayq.store"),
        "aiohttp",  # the webhook URL rules the batch schemas use need no HTTP client
    )
    assert start.loaded(*absent) == [], start.figures()
    # Given its key, it reads no settings (and so loads no Redis client).
    assert start.loaded("relayq.config.settings", "pydantic_settings") == [], start.figures()


def test_a_worker_probe_loads_redis_and_nothing_heavier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``relayq health worker`` runs in a worker's container every few seconds: it reads
    one Redis hash, with no store, Celery or recovery code loaded."""
    monkeypatch.setenv("RELAYQ_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")

    start = _start(tmp_path, ["health", "worker"])

    assert start.result.returncode == 1, start.result.stderr[-2000:]
    assert "unhealthy: Redis did not answer" in start.result.stderr
    absent = ("sqlalchemy", "alembic", "celery", "kombu", "fastapi", "relayq.store")
    assert start.loaded(*absent, "relayq.recovery.handback") == [], start.figures()
