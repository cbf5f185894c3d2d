"""Generated images' bytes, kept in the file storage rather than in the job's row.

A GPT image model (and the mock) answers each image as base64: a megabyte or
more an image, which the job's stored answer, its events, its reply to a
waiting caller and a cache entry would each carry again. So the worker writes
each image's bytes to the file storage (:mod:`relayq.files.storage`, the same
as ``/v1/files``), adds a file row owned by the job's key (purpose
``image_generation``, kept as long as jobs are: ``retention.jobs_days``), and
the answer keeps a reference in place of the bytes: the image's ``file_id``
and its relayq ``url``, ``/v1/files/{file_id}/content`` (readable by that key
only). ``POST /v1/images/generations`` reads the bytes back for a caller who
asked for ``b64_json`` (api/routes/images.py). An image the upstream answered
as a URL is left as it is.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable

from relayq.files.storage import FileStorage
from relayq.ids import new_id
from relayq.providers.errors import MalformedResponse
from relayq.schemas.files import FilePurpose
from relayq.schemas.images import ImagesResponse
from relayq.store import Database
from relayq.store.files import add_file

__all__ = ["ImageFiles", "content_path", "image_extension"]

_SIGNATURES = {
    b"\x89PNG\r\n\x1a\n": "png",
    b"\xff\xd8\xff": "jpeg",
    b"RIFF": "webp",
    b"GIF8": "gif",
    b"<svg": "svg",
    b"<?xml": "svg",
}


def content_path(file_id: str) -> str:
    """The relayq URL (a path on the API) of a file's bytes."""
    return f"/v1/files/{file_id}/content"


def image_extension(data: bytes) -> str:
    """``png``, ``jpeg``, ``webp``, ``gif`` or ``svg`` by the bytes' signature; ``bin`` for
    anything else."""
    for signature, extension in _SIGNATURES.items():
        if data.startswith(signature):
            return extension
    return "bin"


class ImageFiles:
    """Moves an answer's base64 images to the file storage, leaving references."""

    def __init__(
        self,
        *,
        storage: FileStorage,
        database: Database,
        lifetime_seconds: float | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``lifetime_seconds``: how long the files are kept (None: until deleted)."""
        self._storage = storage
        self._database = database
        self._lifetime = lifetime_seconds
        self._clock = clock

    async def keep(self, answer: ImagesResponse, *, job_id: str, key_id: str) -> ImagesResponse:
        """``answer`` with each base64 image stored and referenced (``file_id``, ``url``);
        raises :class:`MalformedResponse` for base64 that does not decode, before any
        image is written."""
        contents = {
            index: _decoded(image.b64_json, index)
            for index, image in enumerate(answer.data)
            if image.b64_json
        }
        if not contents:
            return answer
        now = self._clock()
        data = list(answer.data)
        rows: list[tuple[str, str, int]] = []
        for index, content in contents.items():
            file_id = new_id("file")
            async with self._storage.writer(file_id) as writer:
                await writer.write(content)
                await writer.commit()
            rows.append((file_id, f"{job_id}-{index}.{image_extension(content)}", len(content)))
            update = {"b64_json": None, "file_id": file_id, "url": content_path(file_id)}
            data[index] = data[index].model_copy(update=update)
        async with self._database.session() as session:
            for file_id, filename, size in rows:
                add_file(
                    session,
                    file_id=file_id,
                    key_id=key_id,
                    purpose=FilePurpose.IMAGE_GENERATION.value,
                    filename=filename,
                    size=size,
                    lines=0,
                    now=now,
                    expires_at=None if self._lifetime is None else now + self._lifetime,
                )
            await session.commit()
        return answer.model_copy(update={"data": data})


def _decoded(b64: str, index: int) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MalformedResponse(f"image {index} is not base64: {exc}") from exc
