"""A small typed client of relayq's HTTP API (files and batches), for the CLI.

It talks HTTP only, so the CLI works against a remote relayq as well as a
local one. httpx's exceptions and error answers are mapped here, at the
boundary, to two kinds: ``ApiUnavailable`` for what may pass by itself (no
connection, a timeout, a 429 or 5xx answer), which callers may retry, and
``ApiRequestError`` for an answer that will not change, carrying the API's
own message. ``follow_batch`` and ``save_file`` are the two calls that do
retry, waiting out an API that went away; they report to callbacks and
print nothing themselves.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from relayq.schemas.batches import FINAL_BATCH_STATUSES, BatchList, BatchObject
from relayq.schemas.files import FileObject

__all__ = [
    "ApiClient",
    "ApiError",
    "ApiRequestError",
    "ApiUnavailable",
    "Backoff",
    "BatchWatcher",
    "dev_api_key",
    "follow_batch",
    "save_file",
]

_Model = TypeVar("_Model", BatchObject, BatchList, FileObject)
_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
# Uploads and downloads move whole files: allow longer silences on the socket.
_FILE_TIMEOUT = httpx.Timeout(120.0, connect=5.0)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


class ApiError(Exception):
    """Any failure to get an answer we can use from the API."""


class ApiUnavailable(ApiError):
    """The API could not be reached or answered 429/5xx: trying again later may work."""


class ApiRequestError(ApiError):
    """The API refused the request (4xx other than 429): retrying will not help."""

    def __init__(
        self, message: str, *, status_code: int, code: str | None, param: str | None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.param = param


def _retryable(status_code: int) -> bool:
    return status_code == 429 or status_code >= 500


def _error_from(response: httpx.Response) -> ApiError:
    """The API's OpenAI-shaped error as our exception (or the raw text if not that shape)."""
    code = param = None
    try:
        detail = response.json()["error"]
        message, code, param = str(detail["message"]), detail.get("code"), detail.get("param")
    except (ValueError, KeyError, TypeError):
        message = response.text.strip()[:300] or response.reason_phrase
    message = f"{message} (HTTP {response.status_code})"
    if _retryable(response.status_code):
        return ApiUnavailable(message)
    return ApiRequestError(message, status_code=response.status_code, code=code, param=param)


def _unreachable(base_url: str, exc: httpx.TransportError) -> ApiUnavailable:
    reason = str(exc) or type(exc).__name__
    return ApiUnavailable(f"cannot reach the API at {base_url}: {reason}")


def dev_api_key(api_url: str) -> str | None:
    """The key ``relayq dev`` uses (see relayq/cli/dev.py), for an API on this machine.

    Only a loopback API gets it, so the dev key is never sent to another host.
    """
    if urlsplit(api_url).hostname not in _LOOPBACK:
        return None
    # Imported here: the settings pull in Redis's client, which a command given
    # its key (--api-key, RELAYQ_API_KEY) never needs.
    from relayq.config.settings import Settings

    settings = Settings()
    if settings.dev_api_key is not None:
        return settings.dev_api_key.get_secret_value()
    saved = settings.data_dir / "dev-api-key"
    return (saved.read_text().strip() or None) if saved.is_file() else None


class ApiClient:
    """Files and batches over HTTP, authenticated with one API key."""

    def __init__(
        self, *, base_url: str, api_key: str, transport: httpx.BaseTransport | None = None
    ) -> None:
        # Accept OpenAI-style base URLs ("…/v1") as well as the server's root.
        self.base_url = base_url.rstrip("/").removesuffix("/v1")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=_TIMEOUT,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **options: Any) -> Any:
        """One request; its JSON answer, or our error for a failure."""
        try:
            response = self._http.request(method, path, **options)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        if response.status_code >= 400:
            raise _error_from(response)
        try:
            return response.json()
        except ValueError as exc:
            raise ApiUnavailable(f"{path} answered something that is not JSON") from exc

    def upload_batch_file(self, source: IO[bytes], *, filename: str) -> FileObject:
        """Upload a JSONL file of batch requests (streamed from ``source``)."""
        answer = self._call(
            "POST",
            "/v1/files",
            files={"file": (filename, source, "application/jsonl")},
            data={"purpose": "batch"},
            timeout=_FILE_TIMEOUT,
        )
        return _parsed(FileObject, answer)

    def create_batch(
        self,
        *,
        input_file_id: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        idempotency_key: str | None = None,
    ) -> BatchObject:
        """Create a batch; with ``idempotency_key``, a retry returns the same batch."""
        body = {
            "input_file_id": input_file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": completion_window,
            "metadata": metadata,
        }
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return _parsed(BatchObject, self._call("POST", "/v1/batches", json=body, headers=headers))

    def get_batch(self, batch_id: str) -> BatchObject:
        return _parsed(BatchObject, self._call("GET", f"/v1/batches/{batch_id}"))

    def cancel_batch(self, batch_id: str) -> BatchObject:
        return _parsed(BatchObject, self._call("POST", f"/v1/batches/{batch_id}/cancel"))

    def list_batches(self, *, limit: int, after: str | None = None) -> BatchList:
        params: dict[str, str | int] = {"limit": limit}
        if after is not None:
            params["after"] = after
        return _parsed(BatchList, self._call("GET", "/v1/batches", params=params))

    def download_file(self, file_id: str, sink: IO[bytes]) -> int:
        """Stream a file's content into ``sink``; the number of bytes written.

        A failure part way leaves what was written in ``sink``: callers that
        retry start again on a fresh sink.
        """
        written = 0
        try:
            with self._http.stream(
                "GET", f"/v1/files/{file_id}/content", timeout=_FILE_TIMEOUT
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise _error_from(response)
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
        except httpx.TransportError as exc:
            raise _unreachable(self.base_url, exc) from exc
        return written


def _parsed(kind: type[_Model], answer: Any) -> _Model:
    try:
        return kind.model_validate(answer)
    except ValidationError as exc:
        raise ApiError(f"the API answered a {kind.__name__} relayq cannot read: {exc}") from exc


@dataclass
class Backoff:
    """Delays between tries while the API is away: doubling from ``first``, capped."""

    first: float = 0.5
    cap: float = 5.0
    _tries: int = field(default=0, init=False)

    def next(self) -> float:
        self._tries += 1
        return min(self.cap, self.first * 2.0 ** (self._tries - 1))

    def reset(self) -> None:
        self._tries = 0


class BatchWatcher(Protocol):
    """What ``follow_batch`` reports to: each state seen, and each failed try."""

    def show(self, batch: BatchObject) -> None: ...

    def reconnecting(self, reason: str, *, retry_in: float) -> None: ...


Sleep = Callable[[float], None]


def follow_batch(
    client: ApiClient,
    batch_id: str,
    *,
    watcher: BatchWatcher,
    poll_seconds: float = 1.0,
    sleep: Sleep = time.sleep,
) -> BatchObject:
    """Poll the batch until it ends, reporting each state; wait out API outages.

    Polling rather than the SSE stream: each poll is a short request of its
    own, so a dropped connection costs one failed poll and leaves no stream
    to resume. Refusals (a revoked key, an unknown batch) raise.
    """
    backoff = Backoff()
    while True:
        try:
            batch = client.get_batch(batch_id)
        except ApiUnavailable as exc:
            delay = backoff.next()
            watcher.reconnecting(str(exc), retry_in=delay)
            sleep(delay)
            continue
        backoff.reset()
        watcher.show(batch)
        if batch.status in FINAL_BATCH_STATUSES:
            return batch
        sleep(poll_seconds)


def create_batch_retrying(
    client: ApiClient,
    *,
    input_file_id: str,
    completion_window: str,
    metadata: dict[str, str] | None,
    on_retry: Callable[[str, float], None],
    attempts: int = 8,
    sleep: Sleep = time.sleep,
) -> BatchObject:
    """Create the batch, trying again while the API is away (up to ``attempts`` tries).

    Every try carries the same Idempotency-Key, so a try whose answer was
    lost and a later one make one batch, not two.
    """
    key = f"relayq-cli-{uuid.uuid4()}"
    backoff = Backoff()
    for attempt in range(1, attempts + 1):
        try:
            return client.create_batch(
                input_file_id=input_file_id,
                completion_window=completion_window,
                metadata=metadata,
                idempotency_key=key,
            )
        except ApiUnavailable as exc:
            if attempt == attempts:
                raise
            delay = backoff.next()
            on_retry(str(exc), delay)
            sleep(delay)
    raise AssertionError("unreachable")


def save_file(
    client: ApiClient,
    file_id: str,
    path: Path,
    *,
    on_retry: Callable[[str, float], None],
    sleep: Sleep = time.sleep,
) -> int:
    """Save a file to ``path``, whole or not at all, waiting out outages; its line count."""
    part = path.with_name(f"{path.name}.part")
    backoff = Backoff()
    while True:
        try:
            with part.open("wb") as sink:
                client.download_file(file_id, sink)
            break
        except ApiUnavailable as exc:
            delay = backoff.next()
            on_retry(str(exc), delay)
            sleep(delay)
    part.replace(path)
    with path.open("rb") as saved:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: saved.read(1 << 20), b""))
