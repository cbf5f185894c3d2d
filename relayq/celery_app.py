"""``celery -A relayq.celery_app …``: relayq's Celery app for Celery's own tools.

Flower needs the app (not only the broker URL) to know relayq's priority
queues; ``relayq flower`` uses this. The app is built from settings on first
access, not at import.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]  # noqa: F822 - provided by __getattr__, built on first access


def __getattr__(name: str) -> Any:
    if name == "app":
        from relayq.queueing import create_celery
        from relayq.settings import Settings

        return create_celery(Settings())
    raise AttributeError(name)
