"""Inline batch requests stored as a batch input file, in OpenAI's line format.

A batch created with its requests in the body (``POST /v1/batches`` with
``requests``, or Anthropic's ``POST /v1/messages/batches``) goes the way of
one created from an uploaded file: its requests are written as a ``batch``
file, one ``{"custom_id", "method", "url", "body"}`` line each, which a
worker then validates and stores as held jobs (:mod:`relayq.batches.preparation`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from relayq.files.storage import FileStorage
from relayq.ids import new_id
from relayq.schemas.files import FilePurpose
from relayq.store import Database
from relayq.store.files import add_file

__all__ = ["store_inline_requests"]


async def store_inline_requests(
    *,
    storage: FileStorage,
    database: Database,
    key_id: str,
    endpoint: str,
    requests: Sequence[tuple[str, dict[str, Any]]],
    now: float,
    lifetime: float | None = None,
) -> str:
    """Write ``requests`` (custom id, body) as ``key_id``'s batch input file; its id.
    ``lifetime``: seconds the file is kept (None: until deleted)."""
    file_id = new_id("file", now=now)
    async with storage.writer(file_id) as writer:
        for custom_id, body in requests:
            line = {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": body}
            await writer.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        size = await writer.commit()
    async with database.session() as session:
        add_file(
            session,
            file_id=file_id,
            key_id=key_id,
            purpose=FilePurpose.BATCH.value,
            filename="inline-requests.jsonl",
            size=size,
            lines=len(requests),
            now=now,
            expires_at=None if lifetime is None else now + lifetime,
        )
        await session.commit()
    return file_id
