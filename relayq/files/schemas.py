"""File objects as OpenAI's Files API returns them."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from relayq.store.models import File

__all__ = ["FileDeleted", "FileList", "FileObject", "FilePurpose", "file_object"]


class FilePurpose(str, Enum):
    BATCH = "batch"
    """An input file of requests, uploaded by a caller."""
    BATCH_OUTPUT = "batch_output"
    """A batch's output or error file, written by relayq."""


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["processed"] = "processed"
    """Files are checked as they are uploaded: a stored file is always processed."""
    expires_at: int | None = None
    status_details: str | None = None


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]
    first_id: str | None
    last_id: str | None
    has_more: bool


class FileDeleted(BaseModel):
    id: str
    object: Literal["file"] = "file"
    deleted: bool


def file_object(row: File) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=int(row.created_at),
        filename=row.filename,
        purpose=FilePurpose(row.purpose),
        expires_at=None if row.expires_at is None else int(row.expires_at),
    )
