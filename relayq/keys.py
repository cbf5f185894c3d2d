"""API key material: generation and hashing.

Keys carry 256 random bits, so a plain SHA-256 is a safe and fast lookup
hash; a slow password hash would buy nothing and cost every request.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["KEY_PREFIX", "generate_key", "hash_key"]

KEY_PREFIX = "rq-"


def generate_key() -> str:
    """A new secret API key, such as ``rq-3fJ...``; shown to its owner once."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()
