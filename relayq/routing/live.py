"""Routing that follows its config file: re-read on change, swapped in whole.

Both processes hold a :class:`LiveRouting`. When the file's contents change,
the new configuration is validated and its adapters built before anything is
swapped; a broken edit is logged and the running configuration stays.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from relayq.config.routes import ConfigError, RoutingConfig
from relayq.config.settings import Settings

__all__ = ["LiveRouting"]

log = logging.getLogger(__name__)


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class LiveRouting:
    """The routing in force, and the loop that reloads it."""

    def __init__(self, settings: Settings, *, apply: Callable[[RoutingConfig], None]) -> None:
        """``apply`` installs a configuration (building adapters, routers); it may raise."""
        self._settings = settings
        self._apply = apply
        self.config = settings.routing()
        self._fingerprint = self._current_fingerprint()
        apply(self.config)

    def _current_fingerprint(self) -> str | None:
        path = self._settings.config_file
        return None if path is None else _fingerprint(path)

    def reload(self) -> bool:
        """Re-read the config file if it changed; True if a new configuration is in force."""
        fingerprint = self._current_fingerprint()
        if fingerprint is None or fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        try:
            config = self._settings.routing()
            self._apply(config)
        except (ConfigError, ValueError) as exc:
            log.error("config file change rejected, keeping the running routing: %s", exc)
            return False
        self.config = config
        log.info("routing reloaded from %s", self._settings.config_file)
        return True

    async def watch(self) -> None:
        """Poll the config file for changes until cancelled."""
        if self._settings.config_file is None:
            return
        while True:
            await asyncio.sleep(self._settings.config_poll_seconds)
            # On the loop itself: the swap is then atomic for every coroutine on it.
            self.reload()
