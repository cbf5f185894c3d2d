"""File objects as OpenAI's Files API returns them."""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel

__all__ = ["FileDeleted", "FileList", "FileObject", "FilePurpose"]


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
