"""The vectors the fake vendors embed texts as: fixed by the text, different per text.

Each fake answers an embeddings call with :func:`fake_vector` of every input,
so a test can tell which input a vector belongs to, and in which order the
answers were joined, with :func:`fake_vector` alone.
"""

from __future__ import annotations

import hashlib

__all__ = ["DEFAULT_DIMENSIONS", "fake_vector", "word_tokens"]

DEFAULT_DIMENSIONS = 4
"""A fake's vector length when the request names none (vendors' are 768 to 3072)."""


def fake_vector(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    """``dimensions`` values in [-1, 1) fixed by ``item``, each exact in float32."""
    seed = item if isinstance(item, str) else ",".join(map(str, item))
    raw = hashlib.shake_256(seed.encode()).digest(dimensions)
    return [byte / 128 - 1 for byte in raw]


def word_tokens(item: str | list[int]) -> int:
    """The tokens a fake bills for ``item``: its words, or its token ids."""
    return len(item.split()) if isinstance(item, str) else len(item)
