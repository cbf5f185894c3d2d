"""A webhook receiver on 127.0.0.1 for tests: scriptable answers, every request verified.

Each test takes an :class:`Endpoint` of its own (a path on the shared
server), gives it the secrets it holds and the answers to give, and reads
back what arrived. Every request is checked with the ``standardwebhooks``
package, as a real receiver would: one that verifies with none of the
endpoint's secrets is answered 401 and recorded as unverified.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.fakes.server import ThreadedServer

__all__ = ["Endpoint", "Received", "Reply", "WebhookReceiver", "verifies"]


@dataclass(frozen=True)
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


def verifies(secret: str, *, body: bytes, headers: dict[str, str]) -> bool:
    """Whether ``standardwebhooks`` accepts the request with ``secret``."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@dataclass(frozen=True)
class Received:
    """One request as it arrived."""

    headers: dict[str, str]
    body: bytes
    at: float
    verified: bool

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def verifies(self, secret: str) -> bool:
        return verifies(secret, body=self.body, headers=self.headers)


class Endpoint:
    """One URL of the receiver: its secrets, its script and what it got."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._secrets: list[str] = []
        self._replies: deque[Reply] = deque()
        self._received: list[Received] = []

    def hold(self, *secrets: str) -> None:
        """Verify requests with these secrets (any one verifying is enough)."""
        with self._lock:
            self._secrets = list(secrets)

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, then 200."""
        with self._lock:
            self._replies.extend(replies)

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def take(self, headers: dict[str, str], body: bytes) -> Reply:
        with self._lock:
            verified = any(verifies(s, body=body, headers=headers) for s in self._secrets)
            self._received.append(
                Received(headers=headers, body=body, at=time.time(), verified=verified)
            )
            if not verified:
                return Reply(401)
            return self._replies.popleft() if self._replies else Reply()


class WebhookReceiver(ThreadedServer):
    """Serves any number of :class:`Endpoint` paths."""

    def __init__(self) -> None:
        super().__init__()
        self._endpoints: dict[str, Endpoint] = {}

    def endpoint(self, *secrets: str) -> Endpoint:
        """A new endpoint holding ``secrets``."""
        path = f"/hooks/{uuid.uuid4().hex}"
        endpoint = Endpoint(self.origin + path)
        endpoint.hold(*secrets)
        self._endpoints[path] = endpoint
        return endpoint

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/hooks/{name}", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.Response:
        endpoint = self._endpoints.get(request.path)
        if endpoint is None:
            return web.Response(status=404)
        body = await request.read()
        reply = endpoint.take({k.lower(): v for k, v in request.headers.items()}, body)
        return web.Response(status=reply.status, headers=reply.headers)
