"""File rows: a file's name, size, owner and expiry. Its bytes live in the file storage.

A file past its ``expires_at`` is not found, as a deleted one is not, from the
moment it expires: the purge (:mod:`relayq.store.retention`) deletes its row
and bytes later.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, or_, select, update
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
    expires_at: float | None = None,
) -> File:
    """Add a file's row to the session (the caller commits); None ``expires_at``: kept
    until deleted."""
    row = File(
        id=file_id,
        key_id=key_id,
        purpose=purpose,
        filename=filename,
        bytes=size,
        lines=lines,
        created_at=now,
        expires_at=expires_at,
    )
    session.add(row)
    return row


def _present(now: float) -> ColumnElement[bool]:
    """Neither deleted nor expired at ``now``."""
    return File.deleted_at.is_(None) & or_(File.expires_at.is_(None), File.expires_at > now)


async def get_file(session: AsyncSession, *, file_id: str, key_id: str, now: float) -> File | None:
    """The file ``file_id`` if it is ``key_id``'s, and neither deleted nor expired."""
    query = select(File).where(File.id == file_id, File.key_id == key_id, _present(now))
    return (await session.execute(query)).scalar_one_or_none()


async def list_files(
    session: AsyncSession,
    *,
    key_id: str,
    limit: int,
    now: float,
    after: str | None = None,
    purpose: str | None = None,
    newest_first: bool = True,
) -> tuple[list[File], bool]:
    """A page of the key's files (neither deleted nor expired) after the cursor ``after``."""
    query = select(File).where(File.key_id == key_id, _present(now))
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    if after is not None:
        query = query.where(File.id < after if newest_first else File.id > after)
    order = File.id.desc() if newest_first else File.id.asc()
    rows = list((await session.execute(query.order_by(order).limit(limit + 1))).scalars())
    return rows[:limit], len(rows) > limit


async def delete_file(session: AsyncSession, *, file_id: str, key_id: str, now: float) -> bool:
    """Mark the file deleted; False if there was no such file (or it expired)."""
    result = await session.execute(
        update(File)
        .where(File.id == file_id, File.key_id == key_id, _present(now))
        .values(deleted_at=now)
        .execution_options(synchronize_session=False)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]
