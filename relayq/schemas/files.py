"""File objects as OpenAI's Files API returns them."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, Field

__all__ = [
    "EXPIRES_AFTER_MAX_SECONDS",
    "EXPIRES_AFTER_MIN_SECONDS",
    "ExpiresAfter",
    "FileDeleted",
    "FileList",
    "FileObject",
    "FilePurpose",
]

EXPIRES_AFTER_MIN_SECONDS = 3600
"""The shortest ``expires_after`` OpenAI accepts: an hour."""
EXPIRES_AFTER_MAX_SECONDS = 2_592_000
"""The longest: 30 days."""


class FilePurpose(str, Enum):
    BATCH = "batch"
    """An input file of requests, uploaded by a caller."""
    BATCH_OUTPUT = "batch_output"
    """A batch's output or error file, written by relayq."""
    IMAGE_GENERATION = "image_generation"
    """An image a job generated, written by relayq (relayq's own purpose: OpenAI has none)."""


class ExpiresAfter(BaseModel):
    """OpenAI's expiration policy of a file: ``seconds`` after its creation.

    An upload's ``expires_after`` (multipart fields ``expires_after[anchor]`` and
    ``expires_after[seconds]``, as OpenAI's SDKs send them), and a batch's
    ``output_expires_after`` for its output and error files.
    """

    anchor: Literal["created_at"]
    """What ``seconds`` count from: the file's creation, the one anchor OpenAI has."""
    seconds: int = Field(ge=EXPIRES_AFTER_MIN_SECONDS, le=EXPIRES_AFTER_MAX_SECONDS)


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
