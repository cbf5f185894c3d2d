"""Secret material: API keys (generation and hashing) and webhook signing secrets.

Keys carry 256 random bits, so a plain SHA-256 is a safe and fast lookup
hash; a slow password hash would buy nothing and cost every request.
"""

from __future__ import annotations

import base64
import hashlib
import secrets

__all__ = ["KEY_PREFIX", "SECRET_PREFIX", "generate_key", "hash_key", "new_secret"]

KEY_PREFIX = "rq-"
SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
"""Standard Webhooks asks for 24 to 64 random bytes."""


def generate_key() -> str:
    """A new secret API key, such as ``rq-3fJ...``; shown to its owner once."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The stored form of ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_secret() -> str:
    """A new webhook signing secret: ``whsec_`` + base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_SECRET_BYTES)).decode()
