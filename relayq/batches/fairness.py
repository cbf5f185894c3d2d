"""Sharing free capacity fairly: max-min fairness over what each party already holds.

Slots go one at a time to whoever holds the fewest (counting what it has
been given so far) and still wants more. Two keys end up holding equal
shares of a provider's window whatever their batches' sizes or the order
they came in, and a key that wants little gets all it wants.
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Mapping
from typing import TypeVar

__all__ = ["fair_shares"]

K = TypeVar("K", bound=Hashable)


def fair_shares(free: int, *, holding: Mapping[K, int], wanting: Mapping[K, int]) -> dict[K, int]:
    """How many of ``free`` slots each party gets (never more than it wants).

    ``holding``: slots each party has now; ``wanting``: how many more it
    would take. Ties go to the party listed first in ``wanting``.
    """
    shares: dict[K, int] = {}
    order = {party: i for i, party in enumerate(wanting)}
    heap = [(holding.get(p, 0), order[p], p) for p, want in wanting.items() if want > 0]
    heapq.heapify(heap)
    while free > 0 and heap:
        held, rank, party = heapq.heappop(heap)
        shares[party] = shares.get(party, 0) + 1
        free -= 1
        if shares[party] < wanting[party]:
            heapq.heappush(heap, (held + 1, rank, party))
    return shares
