"""``/v1/files``: upload, list, retrieve, download and delete files, in OpenAI's shapes.

An upload is copied to the file storage a megabyte at a time as it is read
(the multipart parser keeps at most a megabyte of it in memory, the rest on
disk), counting bytes and lines on the way; a download streams from the
storage. Only ``purpose=batch`` is accepted for uploads; a batch's output
and error files are listed with ``purpose=batch_output``, images that jobs
generated with ``purpose=image_generation`` (their content served with their
image type). An upload may say
when it expires (OpenAI's ``expires_after``); an expired file is not found.
"""

from __future__ import annotations

import mimetypes
import re
import time
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import StreamingResponse

from api.deps import FilesCaller, ReadCaller, ServicesDep, SessionDep
from api.errors import ERROR_RESPONSES, APIError, file_not_found
from api.pages import After, cursor_page
from relayq.files.storage import CHUNK_BYTES
from relayq.ids import new_id
from relayq.schemas.files import (
    EXPIRES_AFTER_MAX_SECONDS,
    EXPIRES_AFTER_MIN_SECONDS,
    FileDeleted,
    FileList,
    FileObject,
    FilePurpose,
)
from relayq.schemas.json_values import text_problem
from relayq.store.files import add_file, delete_file, get_file, list_files
from relayq.store.views import file_object

__all__ = ["MAX_FILENAME_CHARS", "router"]

MAX_FILENAME_CHARS = 512
"""The longest file name kept (the files table's column)."""

router = APIRouter(prefix="/v1/files", tags=["files"], responses=ERROR_RESPONSES)


def _header_safe(filename: str) -> str:
    """The caller's file name, fit for a header: no quotes, no line breaks, ASCII only."""
    return re.sub(r"[^A-Za-z0-9._ -]", "_", filename)[:255] or "file"


def _media_type(purpose: str, filename: str) -> str:
    """A generated image's type by its name (``image/png``...); anything else's is bytes,
    an SVG's too (a script in it would run at the API's origin if a browser rendered it)."""
    if purpose == FilePurpose.IMAGE_GENERATION.value:
        guessed, _ = mimetypes.guess_type(filename)
        if guessed is not None and guessed.startswith("image/") and "svg" not in guessed:
            return guessed
    return "application/octet-stream"


def _kept_filename(filename: str | None) -> str:
    """The upload's file name as stored, or a 400 for one the files table cannot hold.

    Checked before the upload is read: PostgreSQL refused a NUL or a name over
    the column's length only at the INSERT, after the whole upload, as a 500.
    """
    if not filename:
        return "upload.jsonl"
    problem = text_problem(filename)
    if problem is None and len(filename) > MAX_FILENAME_CHARS:
        problem = f"has {len(filename)} characters, over the {MAX_FILENAME_CHARS} allowed"
    if problem is not None:
        raise APIError(400, f"Invalid file name: it {problem}.", code="invalid_value", param="file")
    return filename


def _expires_after(anchor: str | None, seconds: str | None) -> int | None:
    """The upload's ``expires_after[seconds]``, checked; None when it names none."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        shown = "missing" if anchor is None else f"'{anchor[:100]}'"
        raise APIError(
            400,
            f"Invalid 'expires_after.anchor': {shown}. The supported anchor is 'created_at'.",
            code="invalid_value",
            param="expires_after.anchor",
        )
    text = (seconds or "").strip()
    value = int(text) if text.isascii() and text.isdigit() and len(text) < 12 else None
    if value is None or not EXPIRES_AFTER_MIN_SECONDS <= value <= EXPIRES_AFTER_MAX_SECONDS:
        shown = "missing" if seconds is None else f"'{seconds[:100]}'"
        raise APIError(
            400,
            f"Invalid 'expires_after.seconds': {shown}. Expected an integer from "
            f"{EXPIRES_AFTER_MIN_SECONDS} (1 hour) to {EXPIRES_AFTER_MAX_SECONDS} (30 days).",
            code="invalid_value",
            param="expires_after.seconds",
        )
    return value


@router.post("", response_model=FileObject)
async def upload(
    key: FilesCaller,
    services: ServicesDep,
    session: SessionDep,
    file: Annotated[UploadFile, File(description="The JSONL file: one request per line.")],
    purpose: Annotated[str, Form(description="Must be 'batch'.")],
    expires_anchor: Annotated[
        str | None,
        Form(
            alias="expires_after[anchor]",
            description="OpenAI's `expires_after.anchor`: `created_at`.",
        ),
    ] = None,
    expires_seconds: Annotated[
        str | None,
        Form(
            alias="expires_after[seconds]",
            description="OpenAI's `expires_after.seconds`: the file expires this many "
            "seconds after its upload (3600 to 2592000). Without it, the deployment's "
            "`retention.files_days` (by default, kept until deleted).",
        ),
    ] = None,
) -> FileObject:
    """Upload a batch input file (up to 200 MB and 50,000 lines by default)."""
    if purpose != FilePurpose.BATCH.value:
        raise APIError(
            400,
            f"Invalid purpose '{purpose}': relayq accepts uploads with purpose 'batch' only.",
            code="invalid_purpose",
            param="purpose",
        )
    asked = _expires_after(expires_anchor, expires_seconds)
    lifetime = services.settings.retention.file_seconds() if asked is None else float(asked)
    filename = _kept_filename(file.filename)
    limits = services.settings.files
    file_id = new_id("file")
    size = lines = 0
    last = b"\n"
    async with services.storage.writer(file_id) as writer:
        while chunk := await file.read(CHUNK_BYTES):
            size += len(chunk)
            if size > limits.max_bytes:
                raise APIError(
                    413,
                    f"File too large: the limit is {limits.max_bytes} bytes. "
                    "Split the requests into several files and batches.",
                    code="file_too_large",
                    param="file",
                )
            lines += chunk.count(b"\n")
            last = chunk[-1:]
            await writer.write(chunk)
        lines += last != b"\n"  # a last line without its newline
        if lines > limits.max_lines:
            raise APIError(
                400,
                f"File has {lines} lines: the limit is {limits.max_lines}. "
                "Split the requests into several files and batches.",
                code="too_many_lines",
                param="file",
            )
        if size == 0:
            raise APIError(400, "File is empty.", code="empty_file", param="file")
        await writer.commit()
    now = time.time()
    row = add_file(
        session,
        file_id=file_id,
        key_id=key.id,
        purpose=purpose,
        filename=filename,
        size=size,
        lines=lines,
        now=now,
        expires_at=None if lifetime is None else now + lifetime,
    )
    await session.commit()
    return file_object(row)


@router.get("", response_model=FileList)
async def list_(
    key: ReadCaller,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
    after: After = None,
    order: Literal["asc", "desc"] = "desc",
    purpose: FilePurpose | None = None,
) -> FileList:
    """The caller's files (newest first by default)."""
    rows, has_more = await list_files(
        session,
        key_id=key.id,
        limit=limit,
        now=time.time(),
        after=after,
        purpose=None if purpose is None else purpose.value,
        newest_first=order == "desc",
    )
    data = [file_object(row) for row in rows]
    return cursor_page(FileList, data, has_more=has_more)


@router.get("/{file_id}", response_model=FileObject)
async def retrieve(file_id: str, key: ReadCaller, session: SessionDep) -> FileObject:
    row = await get_file(session, file_id=file_id, key_id=key.id, now=time.time())
    if row is None:
        raise file_not_found(file_id)
    return file_object(row)


@router.get(
    "/{file_id}/content",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}, "description": "The bytes."}},
)
async def content(file_id: str, key: ReadCaller, services: ServicesDep) -> StreamingResponse:
    """The file's contents, streamed from the storage."""
    async with services.database.session() as session:
        row = await get_file(session, file_id=file_id, key_id=key.id, now=time.time())
    if row is None:
        raise file_not_found(file_id)
    return StreamingResponse(
        services.storage.read(file_id),
        media_type=_media_type(row.purpose, row.filename),
        headers={
            "content-length": str(row.bytes),
            "content-disposition": f'attachment; filename="{_header_safe(row.filename)}"',
        },
    )


@router.delete("/{file_id}", response_model=FileDeleted)
async def delete(
    file_id: str, key: FilesCaller, services: ServicesDep, session: SessionDep
) -> FileDeleted:
    if not await delete_file(session, file_id=file_id, key_id=key.id, now=time.time()):
        raise file_not_found(file_id)
    await services.storage.delete(file_id)
    return FileDeleted(id=file_id, deleted=True)
