"""The coalescer: alone at once, then the callers queued meanwhile together."""

from __future__ import annotations

import asyncio

import pytest

from relayq.coalescing import Coalescer


def test_callers_arriving_during_a_batch_go_together_in_the_next() -> None:
    async def scenario() -> None:
        batches: list[list[int]] = []
        gate = asyncio.Event()

        async def handle(items: list[int]) -> list[int]:
            batches.append(items)
            await gate.wait()
            return [item * 10 for item in items]

        coalescer: Coalescer[int, int] = Coalescer(handle)
        first = asyncio.create_task(coalescer.submit(1))
        await asyncio.sleep(0)  # the first batch is under way, held at the gate
        later = [asyncio.create_task(coalescer.submit(n)) for n in (2, 3, 4)]
        await asyncio.sleep(0)
        gate.set()
        assert await first == 10
        assert await asyncio.gather(*later) == [20, 30, 40]
        assert batches == [[1], [2, 3, 4]]
        assert coalescer.batches == 2

    asyncio.run(scenario())


def test_a_failed_batch_fails_its_callers_only_and_a_cancelled_caller_is_skipped() -> None:
    async def scenario() -> None:
        async def handle(items: list[str]) -> list[str]:
            await asyncio.sleep(0.01)
            if "bad" in items:
                raise ValueError("broken batch")
            return [item.upper() for item in items]

        coalescer: Coalescer[str, str] = Coalescer(handle)
        with pytest.raises(ValueError, match="broken batch"):
            await coalescer.submit("bad")
        gone = asyncio.create_task(coalescer.submit("gone"))
        kept = asyncio.create_task(coalescer.submit("kept"))
        await asyncio.sleep(0)
        gone.cancel()
        assert await kept == "KEPT"
        assert gone.cancelled()

    asyncio.run(scenario())
