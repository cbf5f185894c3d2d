"""File rows: a file's name, size and owner. Its bytes live in the file storage."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from relayq.store.models import File

__all__ = ["add_file", "delete_file", "get_file", "list_files"]


def add_file(
    session: AsyncSession,
    *,
    file_id: str,
    key_id: str,
    purpose: str,
    filename: str,
    size: int,
    lines: int,
    now: float,
) -> File:
    """Add a file's row to the session (the caller commits)."""
    row = File(
        id=file_id,
        key_id=key_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        lines=lines,
        created_at=now,
    )
    session.add(row)
    return row


async def get_file(session: AsyncSession, *, file_id: str, key_id: str) -> File | None:
    """The file ``file_id`` if it is ``key_id``'s and not deleted."""
    query = select(File).where(File.id == file_id, File.key_id == key_id, File.deleted_at.is_(None))
    return (await session.execute(query)).scalar_one_or_none()


async def list_files(
    session: AsyncSession,
    *,
    key_id: str,
    limit: int,
    after: str | None = None,
    purpose: str | None = None,
    newest_first: bool = True,
) -> tuple[list[File], bool]:
    """A page of the key's files after the cursor ``after``."""
    query = select(File).where(File.key_id == key_id, File.deleted_at.is_(None))
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    if after is not None:
        query = query.where(File.id < after if newest_first else File.id > after)
    order = File.id.desc() if newest_first else File.id.asc()
    rows = list((await session.execute(query.order_by(order).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


async def delete_file(session: AsyncSession, *, file_id: str, key_id: str, now: float) -> bool:
    """Mark the file deleted; False if there was no such file."""
    result = await session.execute(
        update(File)
        .where(File.id == file_id, File.key_id == key_id, File.deleted_at.is_(None))
        .values(deleted_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
