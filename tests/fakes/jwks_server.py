"""An identity provider's key set endpoint (a JSON Web Key Set) on 127.0.0.1.

Tests publish keys with :meth:`FakeJwks.publish` (a key rotation is a new
list) and read :attr:`FakeJwks.hits` to see how often the API fetched them.
"""

from __future__ import annotations

import threading
from typing import Any

from aiohttp import web

from tests.fakes.server import ThreadedServer

__all__ = ["FakeJwks"]


class FakeJwks(ThreadedServer):
    """Serves ``{"keys": [...]}`` at ``/jwks.json`` and counts the requests."""

    def __init__(self) -> None:
        super().__init__()
        self._keys: list[dict[str, Any]] = []
        self._hits = 0
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.origin}/jwks.json"

    @property
    def hits(self) -> int:
        """Requests for the key set so far."""
        with self._lock:
            return self._hits

    def publish(self, *keys: dict[str, Any]) -> None:
        """Serve exactly ``keys`` (public JWKs) from now on."""
        with self._lock:
            self._keys = list(keys)

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/jwks.json", self._serve_keys)
        return app

    async def _serve_keys(self, request: web.Request) -> web.Response:
        with self._lock:
            self._hits += 1
            keys = list(self._keys)
        return web.json_response({"keys": keys})
