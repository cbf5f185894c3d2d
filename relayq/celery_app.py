"""``celery -A relayq.celery_app …``: relayq's Celery app for Celery's own tools.

Flower needs the app (not only the broker URL) to know relayq's priority
queues; ``relayq flower`` uses this. The app is built from settings on first
access, not at import, and logging is configured then: Celery's CLI loads the
app before Flower sets up its own logging, which then finds relayq's JSON
handler in place and adds none of its own, so Flower's lines are JSON too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]  # noqa: F822 - provided by __getattr__, built on first access


def __getattr__(name: str) -> Any:
    if name == "app":
        from relayq.config.settings import Settings
        from relayq.observability.logs import configure_logging
        from relayq.queueing.broker import create_celery

        settings = Settings()
        configure_logging(settings.log_level)
        return create_celery(settings)
    raise AttributeError(name)
