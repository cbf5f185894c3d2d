"""DeltaPublisher: one send in flight, what arrives meanwhile goes next, nothing waits
for a later chunk."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relayq.chat import ChatCompletionChunk
from relayq.deltas import DeltaPublisher


def chunk(text: str | None, *, role: str | None = None) -> ChatCompletionChunk:
    delta: dict[str, Any] = {}
    if role is not None:
        delta["role"] = role
    if text is not None:
        delta["content"] = text
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": None}],
        }
    )


class Sink:
    """A send that the test lets finish one at a time."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self, data: dict[str, Any]) -> None:
        self.started.set()
        await self.release.wait()
        self.release.clear()
        if self.fail is not None:
            raise self.fail
        self.sent.append(data)

    async def finish_one(self) -> None:
        await self.started.wait()
        self.started.clear()
        self.release.set()
        await asyncio.sleep(0)


def test_a_chunk_after_a_burst_goes_without_waiting_for_the_next_chunk() -> None:
    """The role chunk and the first token come together; the token must not wait for the
    second token (it did, a whole token interval, when a 20 ms timer gathered chunks)."""

    async def scenario() -> list[dict[str, Any]]:
        sink = Sink()
        deltas = DeltaPublisher(sink)
        deltas.add(chunk("", role="assistant"))
        await sink.started.wait()  # the first goes at once
        deltas.add(chunk("Hel"))
        deltas.add(chunk("lo"))
        await sink.finish_one()
        await sink.finish_one()  # no further add: the queued chunks go on their own
        await asyncio.wait_for(deltas.flush(), 1)
        return sink.sent

    sent = asyncio.run(scenario())
    assert [d["text"] for d in sent] == ["", "Hello"]
    assert [len(d["chunks"]) for d in sent] == [1, 2]
    assert sent[1]["chunks"][0]["choices"][0]["delta"] == {"content": "Hel"}


def test_flush_waits_for_every_chunk_and_text_sent_says_whether_text_left() -> None:
    async def scenario() -> tuple[bool, bool, list[str]]:
        sent: list[str] = []

        async def send(data: dict[str, Any]) -> None:
            await asyncio.sleep(0.001)
            sent.append(data["text"])

        deltas = DeltaPublisher(send)
        deltas.add(chunk("", role="assistant"))
        await deltas.flush()
        before = deltas.text_sent
        for piece in ("a", "b", "c"):
            deltas.add(chunk(piece))
            await asyncio.sleep(0)
        await deltas.flush()
        return before, deltas.text_sent, sent

    before, after, sent = asyncio.run(scenario())
    assert before is False
    assert after is True
    assert "".join(sent) == "abc"
    assert sent[0] == ""


def test_abandon_waits_for_the_send_in_flight_and_drops_the_rest() -> None:
    async def scenario() -> list[str]:
        sink = Sink()
        deltas = DeltaPublisher(sink)
        deltas.add(chunk("first"))
        await sink.started.wait()
        deltas.add(chunk("never"))
        abandoning = asyncio.ensure_future(deltas.abandon())
        await asyncio.sleep(0)
        assert not abandoning.done()  # the send in flight is waited for
        await sink.finish_one()
        await asyncio.wait_for(abandoning, 1)
        await asyncio.sleep(0.01)
        return [d["text"] for d in sink.sent]

    assert asyncio.run(scenario()) == ["first"]


def test_a_failed_send_raises_at_the_next_chunk_and_at_flush() -> None:
    async def scenario() -> tuple[str, str]:
        sink = Sink()
        sink.fail = ConnectionError("redis gone")
        deltas = DeltaPublisher(sink)
        deltas.add(chunk("a"))
        await sink.finish_one()
        await asyncio.sleep(0)
        with pytest.raises(ConnectionError) as at_add:
            deltas.add(chunk("b"))
        with pytest.raises(ConnectionError) as at_flush:
            await deltas.flush()
        return str(at_add.value), str(at_flush.value)

    assert asyncio.run(scenario()) == ("redis gone", "redis gone")
