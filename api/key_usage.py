"""Keys' ``last_used_at``, written at most once a minute per key, off the request's path.

Writing the column on every request would add a SQL statement to each one.
Instead this process remembers when it last wrote each key; a request whose
key was written within the minute costs a dict lookup. Otherwise the key is
queued, and one background task writes every queued key in one ``UPDATE ...
WHERE last_used_at IS NULL OR last_used_at < now - 60``, so several API
processes together still write a key about once a minute. A failed write is
logged, and never fails a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from relayq.store import Database
from relayq.store.keys import LAST_USED_EVERY_SECONDS, touch_keys

__all__ = ["KeyUsage"]

log = logging.getLogger(__name__)

_MAX_REMEMBERED = 100_000


class KeyUsage:
    def __init__(self, database: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._clock = clock
        self._written: dict[str, float] = {}
        """When this process last queued each key's write."""
        self._queued: set[str] = set()
        self._writer: asyncio.Task[None] | None = None

    def note(self, key_id: str) -> None:
        """A request came with ``key_id`` now (call it on the event loop)."""
        now = self._clock()
        last = self._written.get(key_id)
        if last is not None and now - last < LAST_USED_EVERY_SECONDS:
            return
        if len(self._written) >= _MAX_REMEMBERED:
            self._written.clear()
        self._written[key_id] = now
        self._queued.add(key_id)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while self._queued:
            key_ids, self._queued = sorted(self._queued), set()
            try:
                async with self._database.session() as session:
                    await touch_keys(session, key_ids=key_ids, now=self._clock())
            except Exception:
                log.exception("could not write last_used_at of %d key(s)", len(key_ids))

    async def idle(self) -> None:
        """Wait until no write is under way (a shutdown should not lose one to a cancel)."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                await self._writer

    async def aclose(self) -> None:
        await self.idle()
