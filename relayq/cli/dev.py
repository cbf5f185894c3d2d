"""``relayq dev``: the whole stack on one machine with embedded defaults.

SQLite, an embedded Valkey (unless RELAYQ_REDIS_URL is set), the API, one
worker and Flower, as child processes of this one. Each child runs in a
session of its own, so a terminal's Ctrl-C (SIGINT to the foreground process
group) reaches only this process, which then stops them in order: the API,
the worker and Flower first, Valkey last, so that the worker can still
acknowledge the jobs it finishes while stopping. SIGINT, SIGTERM and SIGHUP
stop the stack; a child's exit stops it too, except Valkey's, which is
started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import httpx
from rich.console import Console
from rich.markup import escape

from relayq.cli.batch import DEFAULT_API_URL
from relayq.cli.dev_valkey import DevValkey, DevValkeyError
from relayq.config.settings import Settings
from relayq.queueing.broker import create_celery
from relayq.store import Database
from relayq.store import keys as key_store
from relayq.store.migrate import upgrade

__all__ = ["run_dev_stack"]

console = Console(stderr=True, soft_wrap=True)

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_STOP_SECONDS = 15.0
"""How long the API, the worker and Flower get to stop before they are killed."""

Children = dict[str, subprocess.Popen[bytes]]


def run_dev_stack(settings: Settings, *, api_port: int, flower_port: int) -> int:
    """Run the stack until a signal or a child's exit; returns the exit status."""
    stopping: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stopping.append(signum)  # no printing here: the handler may interrupt a print

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}
    try:
        return _run(settings, stopping, api_port=api_port, flower_port=flower_port)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(settings: Settings, stopping: list[int], *, api_port: int, flower_port: int) -> int:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    env = os.environ.copy()  # children inherit PATH and the caller's RELAYQ_* settings
    # Flower runs here: every task shows in it, also those run before its first broadcast.
    env.setdefault("RELAYQ_WORKER__TASK_EVENTS", "true")
    # The worker's Prometheus metrics on 127.0.0.1:9100 (the API's are at /metrics).
    env.setdefault("RELAYQ_WORKER__METRICS_PORT", "9100")
    valkey = None
    if "redis_url" not in settings.model_fields_set:
        valkey = DevValkey(data_dir=settings.data_dir / "valkey")
        try:
            valkey.start()
        except DevValkeyError as exc:
            console.print(f"[red]{escape(str(exc))}[/red]")
            return 1
        settings = settings.model_copy(update={"redis_url": valkey.url})
        env["RELAYQ_REDIS_URL"] = valkey.url
        console.print(f"embedded Valkey on {valkey.url} (data and log in {valkey.data_dir})")
    children: Children = {}
    try:
        _ensure_sqlite_dir(settings.database_url)
        upgrade(settings.database_url)
        key = asyncio.run(_dev_key(settings))
        if stopping:
            return 0
        node = f"dev@{socket.gethostname()}"
        _start_children(children, env, node=node, api_port=api_port, flower_port=flower_port)
        watch = _Watch(children, valkey, stopping)
        if _wait_ready(settings, watch, node=node, api_port=api_port):
            _banner(key=key, api_port=api_port, flower_port=flower_port)
        elif not watch.done():
            console.print("[yellow]the API or the worker is not ready after 90 s[/yellow]")
        while not watch.done():
            time.sleep(0.2)
        return watch.status
    finally:
        try:
            _stop(children)
        finally:  # Valkey last, whatever happened before
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
    children: Children, env: dict[str, str], *, node: str, api_port: int, flower_port: int
) -> None:
    """Start the API, the worker and Flower into ``children`` (so a failure stops those started)."""
    python = sys.executable
    commands = {
        "api": [
            *(python, "-m", "uvicorn", "api.app:create_app", "--factory"),
            *("--host", "127.0.0.1", "--port", str(api_port), "--no-access-log"),
        ],
        "worker": [python, "-m", "worker", "--hostname", node],
        "flower": [
            *(python, "-m", "celery", "-A", "relayq.celery_app", "flower"),
            *("--address=127.0.0.1", f"--port={flower_port}"),
        ],
    }
    # Flower listens on loopback only here, so its JSON API may go without a login.
    envs = {"flower": {**env, "FLOWER_UNAUTHENTICATED_API": "true"}}
    for name, command in commands.items():
        # Own sessions (and process groups): a terminal's Ctrl-C reaches only us,
        # and stopping a child's group stops whatever it started too.
        children[name] = subprocess.Popen(command, env=envs.get(name, env), start_new_session=True)


class _Watch:
    """Whether the stack should stop: a signal, or a child's exit; restarts Valkey."""

    def __init__(self, children: Children, valkey: DevValkey | None, stopping: list[int]) -> None:
        self._children = children
        self._valkey = valkey
        self._stopping = stopping
        self.status = 0
        self._done = False

    def done(self) -> bool:
        if not self._done:
            self._done = self._check()
        return self._done

    def _check(self) -> bool:
        if self._stopping:
            console.print("stopping relayq: the API, the worker and Flower, then Valkey")
            return True
        exited = [name for name, child in self._children.items() if child.poll() is not None]
        if exited:
            console.print(f"[red]{', '.join(exited)} exited; stopping the stack[/red]")
            self.status = 1
            return True
        return not self._valkey_running()

    def _valkey_running(self) -> bool:
        status = self._valkey.exit_status() if self._valkey is not None else None
        if self._valkey is None or status is None:
            return True
        console.print(f"[yellow]Valkey exited with status {status}; starting it again[/yellow]")
        try:
            self._valkey.start()
        except DevValkeyError as exc:
            console.print(f"[red]{escape(str(exc))}; stopping the stack[/red]")
            self.status = 1
            return False
        console.print(f"Valkey is back on {self._valkey.url}")
        return True


def _wait_ready(settings: Settings, watch: _Watch, *, node: str, api_port: int) -> bool:
    """Wait until the API answers and the worker consumes (it answers a Celery ping)."""
    deadline = time.monotonic() + 90
    celery = create_celery(settings, publisher=True)
    checks: list[Callable[[], bool]] = [
        lambda: _api_up(api_port),
        lambda: bool(celery.control.ping(destination=[node], timeout=0.25, limit=1)),
    ]
    try:
        while checks and time.monotonic() < deadline and not watch.done():
            try:
                ready = checks[0]()
            except Exception:  # a broker that is not there yet; checked again
                ready = False
            if ready:
                checks.pop(0)
            else:
                time.sleep(0.1)
    finally:
        celery.close()
    return not checks


def _api_up(api_port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{api_port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _banner(*, key: str, api_port: int, flower_port: int) -> None:
    api_url = f"http://127.0.0.1:{api_port}"
    export = (
        ""
        if api_url == DEFAULT_API_URL
        else f"\n  For `relayq batch` in another terminal:\n  export RELAYQ_API_URL={api_url}\n"
    )
    console.print(
        f"\n[bold green]relayq is up[/bold green]\n"
        f"  API     {api_url}  (docs at /docs)\n"
        f"  Flower  http://127.0.0.1:{flower_port}\n"
        f"  API key {key}\n{export}\n"
        f"  curl -s {api_url}/v1/jobs -H 'Authorization: Bearer {key}' "
        "-H 'Content-Type: application/json' "
        '-d \'{"model": "mock", "messages": [{"role": "user", "content": "Hi"}]}\'\n'
        "\nCtrl-C stops everything.\n",
        soft_wrap=True,
        highlight=False,
    )


def _stop(children: Children, timeout: float = _STOP_SECONDS) -> None:
    """SIGTERM to each child, SIGKILL to its process group past ``timeout``.

    Then SIGKILL to each group again: a process a child started and left
    behind (Celery's under the worker's supervisor) goes with it.
    """
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for name, child in children.items():
        try:
            child.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            console.print(f"[red]{name} did not stop within {timeout:.0f} s; killing it[/red]")
            _kill_group(child.pid)
            child.wait()
        _kill_group(child.pid)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # an empty group: nothing was left behind
        os.killpg(pgid, signal.SIGKILL)
