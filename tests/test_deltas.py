"""DeltaPublisher: one send in flight, what arrives meanwhile goes next, nothing waits
for a later chunk; a send is queued by the chunk's caller, with no task of its own."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from relayq.execution.deltas import Delta, DeltaPublisher
from relayq.schemas.chat import ChatCompletionChunk


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
        self.sent: list[Delta] = []
        self.started = asyncio.Event()
        self.fail: Exception | None = None
        self._in_flight: list[tuple[Delta, asyncio.Future[None]]] = []

    def __call__(self, delta: Delta) -> asyncio.Future[None]:
        done = asyncio.get_running_loop().create_future()
        self._in_flight.append((delta, done))
        self.started.set()
        return done

    async def finish_one(self) -> None:
        await self.started.wait()
        self.started.clear()
        delta, done = self._in_flight.pop(0)
        if self.fail is not None:
            done.set_exception(self.fail)
        else:
            self.sent.append(delta)
            done.set_result(None)
        await asyncio.sleep(0)


def test_the_role_chunk_waits_for_the_first_words_and_goes_with_them() -> None:
    """OpenAI's streams open with a chunk that only names the role. Sent alone, it made
    the first words wait for its round trip; it now goes in their send."""

    async def scenario() -> list[Delta]:
        sink = Sink()
        deltas = DeltaPublisher(sink)
        assert not deltas.add(chunk("", role="assistant"))
        await asyncio.sleep(0.01)
        assert not sink.started.is_set()  # nothing goes for a role alone
        assert deltas.add(chunk("Hel"))  # the first words go at once, with the role
        await sink.started.wait()
        await sink.finish_one()
        await asyncio.wait_for(deltas.flush(), 1)
        return sink.sent

    sent = asyncio.run(scenario())
    assert [d.text for d in sent] == ["Hel"]
    assert [len(d.chunks) for d in sent] == [2]
    assert sent[0].event_data()["chunks"][0]["choices"][0]["delta"] == {
        "role": "assistant",
        "content": "",
    }


def test_a_chunk_after_a_burst_goes_without_waiting_for_the_next_chunk() -> None:
    """Chunks that came during a send go once it ends, without waiting for another chunk
    (they waited a whole token interval when a 20 ms timer gathered chunks)."""

    async def scenario() -> list[Delta]:
        sink = Sink()
        deltas = DeltaPublisher(sink)
        deltas.add(chunk("Hel"))
        await sink.started.wait()  # the first goes at once
        deltas.add(chunk("lo"))
        deltas.add(chunk("!"))
        await sink.finish_one()
        await sink.finish_one()  # no further add: the queued chunks go on their own
        await asyncio.wait_for(deltas.flush(), 1)
        return sink.sent

    sent = asyncio.run(scenario())
    assert [d.text for d in sent] == ["Hel", "lo!"]
    assert [len(d.chunks) for d in sent] == [1, 2]
    assert sent[1].event_data()["chunks"][0]["choices"][0]["delta"] == {"content": "lo"}


@pytest.mark.parametrize(
    "delta",
    [
        {"role": "assistant", "tool_calls": [{"index": 0, "id": "call_1", "type": "function"}]},
        {"role": "assistant", "refusal": "I can't."},
        {"role": "assistant", "content": "Hi"},
    ],
)
def test_a_first_chunk_with_more_than_a_role_goes_at_once(delta: dict[str, Any]) -> None:
    async def scenario() -> bool:
        sink = Sink()
        deltas = DeltaPublisher(sink)
        first = ChatCompletionChunk.model_validate(
            {"id": "c", "created": 1, "model": "m", "choices": [{"index": 0, "delta": delta}]}
        )
        started = deltas.add(first)
        await asyncio.wait_for(sink.started.wait(), 1)
        await sink.finish_one()
        await deltas.flush()
        return started

    assert asyncio.run(scenario()) is True


def test_flush_waits_for_every_chunk_and_text_sent_says_whether_text_left() -> None:
    async def scenario() -> tuple[bool, bool, list[str]]:
        sent: list[str] = []

        def send(delta: Delta) -> asyncio.Future[None]:
            loop = asyncio.get_running_loop()
            done = loop.create_future()

            def finish() -> None:
                sent.append(delta.text)
                done.set_result(None)

            loop.call_later(0.001, finish)
            return done

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
        return [d.text for d in sink.sent]

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


WIRE = (
    '{"id":"chatcmpl-9","object":"chat.completion.chunk","created":7,"model":"m",'
    '"system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"caf\u00e9"},'
    '"logprobs":null,"finish_reason":null}],"usage":null}'
)
USAGE_WIRE = (
    '{"id":"chatcmpl-9","object":"chat.completion.chunk","created":7,"model":"m",'
    '"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":1,"total_tokens":3}}'
)


def wire_chunk(text: str) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(orjson.loads(text)).keep_wire(text)


def test_an_upstream_chunk_goes_on_as_the_upstream_wrote_it() -> None:
    """Decode once: a chunk that kept its upstream JSON is sent as those bytes, in the
    job's delta event and in a waiting caller's SSE lines, nulls and escapes included."""
    delta = Delta(chunks=[wire_chunk(WIRE), wire_chunk(USAGE_WIRE)], text="café")

    event = orjson.dumps(delta.event_data())
    with_usage = delta.sse(include_usage=True)
    without_usage = delta.sse(include_usage=False)

    assert event == ('{"text":"café","chunks":[' + WIRE + "," + USAGE_WIRE + "]}").encode()
    assert with_usage == f"data: {WIRE}\n\ndata: {USAGE_WIRE}\n\n".encode()
    # The usage chunk only for a caller that asked for it, as OpenAI streams.
    assert without_usage == f"data: {WIRE}\n\n".encode()


def test_a_translated_chunk_is_encoded_and_keeps_usage_only_when_asked() -> None:
    """A chunk with no upstream JSON (an adapter built it) is encoded once, here; usage
    on a chunk with choices is left out unless the caller asked for it."""
    last = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "created": 1,
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
        }
    )
    wired = wire_chunk(orjson.dumps(last.model_dump(mode="json")).decode())
    delta = Delta(chunks=[chunk("hi"), last, wired], text="hi")

    lines = [
        orjson.loads(line.removeprefix(b"data: "))
        for line in delta.sse(include_usage=False).split(b"\n\n")
        if line
    ]
    with_usage = [
        orjson.loads(line.removeprefix(b"data: "))
        for line in delta.sse(include_usage=True).split(b"\n\n")
        if line
    ]

    assert [line["choices"][0]["delta"] for line in lines] == [{"content": "hi"}, {}, {}]
    assert all("usage" not in line for line in lines)
    assert [line.get("usage", {}).get("total_tokens") for line in with_usage] == [None, 3, 3]


def test_a_chunk_whose_event_spans_lines_is_not_kept_as_it_came() -> None:
    split = WIRE.replace(',"choices"', '\n,"choices"')
    kept = wire_chunk(split)

    assert kept.wire is None
    assert b"\n" not in Delta(chunks=[kept], text="").sse(include_usage=True).rstrip(b"\n")


def test_a_stream_sends_its_deltas_without_a_task_per_send() -> None:
    """Per token, a task and a loop turn cost the worker a third of a chunk's CPU: sends
    are queued by the chunk's caller and follow each other from a done callback."""

    async def scenario() -> tuple[int, int, list[str]]:
        sink = Sink()
        deltas = DeltaPublisher(sink)
        tasks = len(asyncio.all_tasks())
        deltas.add(chunk("a"))
        deltas.add(chunk("b"))
        most = len(asyncio.all_tasks())
        await sink.finish_one()
        await sink.finish_one()
        await asyncio.wait_for(deltas.flush(), 1)
        return tasks, most, [d.text for d in sink.sent]

    tasks, most, sent = asyncio.run(scenario())
    assert most == tasks
    assert sent == ["a", "b"]
