"""A real HTTP server on 127.0.0.1 for tests, running in a thread of its own.

Fake vendor servers build on :class:`ThreadedServer`: they describe their
routes as an ``aiohttp.web.Application`` and get a free port, a base URL and a
clean start and stop. The server has its own event loop in its own thread, so
a test drives its client with ``asyncio.run`` while the server keeps serving,
exactly as a remote vendor would.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Generic, Self, TypeVar

from aiohttp import web

__all__ = ["ScriptedServer", "ThreadedServer", "closed_port"]

ReplyT = TypeVar("ReplyT")
RecordT = TypeVar("RecordT")

_START_TIMEOUT = 10.0


def closed_port() -> int:
    """A port on 127.0.0.1 with nothing listening (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class ThreadedServer:
    """Serves :meth:`make_app` on 127.0.0.1 between ``__enter__`` and ``__exit__``.

    Handlers still running when a client hangs up are cancelled (a test that
    times out does not leave a sleeping handler behind), and stopping waits at
    most a second for the rest.
    """

    def __init__(self) -> None:
        self.port = 0
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started: Future[None] = Future()
        self._stop: asyncio.Event | None = None

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def make_app(self) -> web.Application:
        """The application to serve; subclasses add their routes."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._serve, name=type(self).__name__, daemon=True)
        self._thread.start()
        self._started.result(timeout=_START_TIMEOUT)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=_START_TIMEOUT)

    def _serve(self) -> None:
        """The server thread: start, serve until told to stop, clean up, close the loop.

        A failure to start reaches ``__enter__`` through ``_started``.
        """
        loop, sock = self._loop, self._sock
        assert loop is not None
        assert sock is not None
        asyncio.set_event_loop(loop)
        runner: web.AppRunner | None = None
        try:
            runner = web.AppRunner(
                self.make_app(), handler_cancellation=True, shutdown_timeout=1.0, access_log=None
            )
            loop.run_until_complete(self._start(runner, sock))
            self._started.set_result(None)
            loop.run_until_complete(self._wait_for_stop())
        except BaseException as exc:
            if self._started.done():
                raise
            self._started.set_exception(exc)
        finally:
            if runner is not None:
                loop.run_until_complete(runner.cleanup())
            sock.close()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _start(self, runner: web.AppRunner, sock: socket.socket) -> None:
        self._stop = asyncio.Event()
        await runner.setup()
        await web.SockSite(runner, sock).start()

    async def _wait_for_stop(self) -> None:
        assert self._stop is not None
        await self._stop.wait()


class ScriptedServer(ThreadedServer, Generic[ReplyT, RecordT]):
    """A fake vendor that answers from a script and records what it received.

    Tests queue replies with :meth:`script` (each call takes the next, or a
    default one) and read :attr:`requests` back; handlers call
    :meth:`_remember` and :meth:`_next_reply`. Both are guarded by one lock,
    since tests and the server's thread use them at once.
    """

    def __init__(self) -> None:
        super().__init__()
        self._replies: deque[ReplyT] = deque()
        self._requests: list[RecordT] = []
        self._lock = threading.Lock()

    @property
    def requests(self) -> list[RecordT]:
        """The requests received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def script(self, *replies: ReplyT) -> None:
        """Queue how the next calls are answered, in order."""
        with self._lock:
            self._replies.extend(replies)

    def _remember(self, recorded: RecordT) -> None:
        with self._lock:
            self._requests.append(recorded)

    def _next_reply(self, default: Callable[[], ReplyT]) -> ReplyT:
        with self._lock:
            return self._replies.popleft() if self._replies else default()
