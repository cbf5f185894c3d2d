"""A request's caller: the key (or JWT tenant) it acts as, and what it may do."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from relayq.store.models import ApiKey

__all__ = ["Caller", "allows_model"]


def allows_model(models: Collection[str] | None, model: str, route: str | None = None) -> bool:
    """Whether an allow-list ``models`` (None: every model) lets a caller ask for ``model``,
    which names ``route`` (the route an alias names, if known): either name may be listed."""
    return models is None or model in models or (route is not None and route in models)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a request acts for. ``key`` owns what the request makes; ``scopes`` and
    ``models`` are the key's own, or for a JWT the token's claims."""

    key: ApiKey
    scopes: frozenset[str]
    models: frozenset[str] | None = None
    """The models it may ask for; None: every model."""

    def allows(self, model: str, route: str | None = None) -> bool:
        """May ask for ``model`` (the name asked for, or the route it names, is allowed)."""
        return allows_model(self.models, model, route)

    @property
    def id(self) -> str:
        """The owning key's id: every object the caller makes or reads is the key's."""
        return self.key.id

    @classmethod
    def of_key(cls, key: ApiKey) -> Caller:
        """An API key calling with its own scopes and model allow-list."""
        models = frozenset(key.models) if key.models is not None else None
        return cls(key=key, scopes=frozenset(key.scopes), models=models)
