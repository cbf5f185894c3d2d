"""Where file contents live: an interface, and a directory that implements it.

Contents never pass through memory whole: they are written from and read
into chunks. A write is atomic (a temporary name, renamed at the end), so a
reader never sees half a file and a crash leaves no partial one behind. An
S3-compatible bucket would implement the same three methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol

__all__ = ["CHUNK_BYTES", "DirectoryStorage", "FileStorage", "FileWriter", "read_lines"]

CHUNK_BYTES = 1024 * 1024
"""Writes are gathered, and reads are made, in pieces of this size."""

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class FileWriter(Protocol):
    """An open write; its bytes become visible under the name only on :meth:`commit`.

    As a context manager, it aborts on leaving unless committed.
    """

    @property
    def written(self) -> int: ...

    async def __aenter__(self) -> FileWriter: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def write(self, data: bytes) -> None: ...

    async def commit(self) -> int: ...

    async def abort(self) -> None: ...


class FileStorage(Protocol):
    """File contents by name (a file id)."""

    def writer(self, name: str) -> FileWriter: ...

    def read(self, name: str) -> AsyncIterator[bytes]: ...

    async def delete(self, name: str) -> None: ...


class _DirectoryWriter:
    def __init__(self, final: Path) -> None:
        self._final = final
        self._partial = final.with_name(f".{final.name}.{secrets.token_hex(6)}.partial")
        self._file: BinaryIO | None = None
        self._buffer = bytearray()
        self.written = 0

    async def __aenter__(self) -> _DirectoryWriter:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._file is not None or self._buffer:
            await self.abort()

    async def write(self, data: bytes) -> None:
        self._buffer += data
        self.written += len(data)
        if len(self._buffer) >= CHUNK_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        if self._file is None:
            self._file = await asyncio.to_thread(open, self._partial, "wb")
        chunk, self._buffer = bytes(self._buffer), bytearray()
        await asyncio.to_thread(self._file.write, chunk)

    async def commit(self) -> int:
        await self._flush()
        assert self._file is not None
        file, self._file = self._file, None
        await asyncio.to_thread(file.close)
        await asyncio.to_thread(os.replace, self._partial, self._final)
        return self.written

    async def abort(self) -> None:
        self._buffer = bytearray()
        if self._file is not None:
            file, self._file = self._file, None
            await asyncio.to_thread(file.close)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._partial)


class DirectoryStorage:
    """Files in one local (or network-mounted) directory, one file per name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, name: str) -> Path:
        if not _NAME.match(name):
            raise ValueError(f"invalid file name {name!r}")
        return self.root / name

    def writer(self, name: str) -> _DirectoryWriter:
        self.root.mkdir(parents=True, exist_ok=True)
        return _DirectoryWriter(self._path(name))

    async def read(self, name: str) -> AsyncIterator[bytes]:
        """The contents in chunks; raises FileNotFoundError if there is no such file."""
        file = await asyncio.to_thread(open, self._path(name), "rb")
        try:
            while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                yield chunk
        finally:
            await asyncio.to_thread(file.close)

    async def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(os.unlink, self._path(name))


async def read_lines(storage: FileStorage, name: str) -> AsyncIterator[bytes]:
    """The file's lines (without their newline), read chunk by chunk."""
    rest = b""
    async for chunk in storage.read(name):
        lines = (rest + chunk).split(b"\n")
        rest = lines.pop()
        for line in lines:
            yield line
    if rest:
        yield rest
