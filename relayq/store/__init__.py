"""SQL persistence: the source of truth for keys, jobs and attempts."""

from relayq.store.database import Database, async_url, sync_url

__all__ = ["Database", "async_url", "sync_url"]
