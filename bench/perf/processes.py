"""Child processes of a run: each in a session of its own, stopped as a group.

Every process the harness starts goes through :class:`Processes`, which
stops them all (SIGTERM to the group, SIGKILL to what is left) on
:meth:`Processes.stop_all`, whether the run ended, failed or was interrupted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["Processes", "free_port", "wait_for", "wait_for_port"]

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(predicate: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll ``predicate`` until true; raise after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what} not ready within {timeout} s")


def wait_for_port(port: int, *, timeout: float = 30.0) -> None:
    """Wait until something accepts connections on 127.0.0.1:``port``."""

    def accepting() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_for(accepting, timeout=timeout, what=f"127.0.0.1:{port}")


class Processes:
    """The processes started for a run, stopped together."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: Sequence[str], *, log: Path, env: Mapping[str, str], python: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` (Python's arguments unless ``python`` is false), output to ``log``."""
        command = [sys.executable, *argv] if python else list(argv)
        output = open(log, "ab")  # noqa: SIM115 - closed below, kept by the child
        try:
            child = subprocess.Popen(
                command,
                cwd=ROOT,
                env=dict(env),
                stdout=output,
                stderr=output,
                stdin=subprocess.DEVNULL,
                # A session of its own: a signal to the group reaches its children too.
                start_new_session=True,
            )
        finally:
            output.close()
        self._children.append(child)
        return child

    def stop(self, child: subprocess.Popen[bytes], *, grace: float = 10.0) -> None:
        """SIGTERM to the child's group, then SIGKILL if it is still there after ``grace``."""
        if child.poll() is None:
            _signal_group(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
        # Whatever the leader left behind in its group goes too.
        _signal_group(child.pid, signal.SIGKILL)
        if child in self._children:
            self._children.remove(child)

    def stop_all(self) -> None:
        """Stop every child still running, the most recent first."""
        for child in reversed(list(self._children)):
            self.stop(child)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
