"""Streamed chunks as deltas, gathered so a fast stream costs few round trips.

One send is in flight at a time, queued by the caller that adds the chunk
(no task of its own, no loop turn): the first chunk goes out at
once (time to first token is what a streaming caller feels), unless all it
says is who speaks (OpenAI's streams open with ``{"role": "assistant",
"content": ""}``): that one waits for the chunk after it, so the first send
carries the first words instead of making them wait for its round trip. The chunks
that arrive while a send is in flight go together in the next one, each batch
one :class:`Delta`. No timer holds a chunk back: a chunk waits at most for the
send before it, never for the chunk after it (an interval-based batch held the
last chunk of a burst until the next chunk came, a whole token interval
later). Where deltas go is the caller's choice: the job's event stream
(:meth:`Delta.event_data`), or the reply stream of the API process whose
caller waits, as the SSE lines that caller gets (:meth:`Delta.sse`).

Decode once: a chunk an OpenAI-shaped upstream sent as it is carries its
upstream JSON (:attr:`ChatCompletionChunk.wire`), which goes on as those bytes;
only chunks an adapter translated are encoded here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson

from relayq.providers.assembly import chunk_text
from relayq.providers.responses_wire import ResponsesEvent
from relayq.schemas.chat import ChatCompletionChunk

__all__ = ["Delta", "DeltaPublisher", "DeltaSink", "EventPublisher", "EventsDelta"]


@dataclass(frozen=True, slots=True)
class Delta:
    """The chunks of one send, in order, and the text they add."""

    chunks: list[ChatCompletionChunk]
    text: str

    def event_data(self) -> dict[str, Any]:
        """The ``delta`` event's data: ``text`` and the chunks (upstream JSON kept as is)."""
        return {"text": self.text, "chunks": [_json(chunk) for chunk in self.chunks]}

    def sse(self, *, include_usage: bool) -> bytes:
        """The ``data:`` lines an OpenAI streaming client gets for these chunks.

        As OpenAI streams: a chunk without choices (the usage chunk) only when the
        request asked ``stream_options.include_usage``, and no usage otherwise.
        """
        lines = []
        for chunk in self.chunks:
            if not chunk.choices and not (include_usage and chunk.usage is not None):
                continue
            wire = chunk.wire
            if wire is not None and (include_usage or chunk.usage is None):
                body = wire.encode()
            else:
                exclude = None if include_usage else {"usage"}
                shaped = chunk.model_dump(mode="json", exclude_none=True, exclude=exclude)
                body = orjson.dumps(shaped)
            lines.append(b"data: " + body + b"\n\n")
        return b"".join(lines)


@dataclass(frozen=True, slots=True)
class EventsDelta:
    """The Responses events of one send (a responses job on a vendor that speaks
    Responses natively), in order, and the text they add."""

    events: list[ResponsesEvent]
    text: str

    def event_data(self) -> dict[str, Any]:
        """The ``delta`` event's data: ``text`` and the events (upstream JSON kept as is)."""
        return {"text": self.text, "events": [orjson.Fragment(e.wire) for e in self.events]}

    def sse(self) -> bytes:
        """The events as the upstream sent them (``event:`` and ``data:`` lines)."""
        return b"".join(event.sse() for event in self.events)


def _only_a_role(chunk: ChatCompletionChunk) -> bool:
    """Whether ``chunk`` says who speaks and nothing else."""
    if chunk.usage is not None or not chunk.choices:
        return False
    for choice in chunk.choices:
        delta = choice.delta
        if choice.finish_reason is not None or delta.content or delta.tool_calls:
            return False
        if any(delta.model_extra.values() if delta.model_extra else ()):
            return False
    return True


def _json(chunk: ChatCompletionChunk) -> Any:
    wire = chunk.wire
    if wire is not None:
        return orjson.Fragment(wire)
    return chunk.model_dump(mode="json", exclude_none=True)


PieceT = TypeVar("PieceT")
DeltaT = TypeVar("DeltaT")

DeltaSink = Callable[[Delta], asyncio.Future[None]]
"""Queues one delta's send at once (no task, no await); the future of its end.

The future fails only for what should stop the stream: a sink that is best
effort (Redis gone) logs the loss and resolves it."""


class _Publisher(Generic[PieceT, DeltaT]):
    """One job's pieces (chunks, or Responses events), sent as deltas: one send in
    flight, what comes meanwhile next.

    Sends start from the piece's caller and follow each other from the done
    callback of the send before: no task per send, no loop turn per chunk
    (per token, a task and a yield cost a busy worker about 30 µs of CPU).
    """

    def __init__(self, send: Callable[[DeltaT], asyncio.Future[None]]) -> None:
        self._send = send
        self._pending: list[PieceT] = []
        self._sending: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._idle: asyncio.Future[None] | None = None
        """Resolved when nothing is in flight: what :meth:`flush` waits on (its own
        future, so a cancelled flush cancels no send)."""
        self._opened = False
        """Whether a chunk with more than a role came (sends start from it on)."""
        self.text_sent = False
        """Whether any text went out (or is on its way): the caller may then hold
        this attempt's words."""

    def _held(self, piece: PieceT) -> bool:
        """Whether ``piece``, the first, waits for the one after it (it says nothing yet)."""
        return False

    def _pack(self, pieces: list[PieceT]) -> tuple[DeltaT, bool]:
        """One send's delta, and whether it carries some of the answer (the caller may
        then hold this attempt's words: see :attr:`text_sent`)."""
        raise NotImplementedError

    def add(self, chunk: PieceT) -> bool:
        """Queue ``chunk``; its send is queued at once unless one is in flight (it
        takes this one next). Returns whether a send was queued.

        A send that failed raises here, so the stream stops at its next chunk.
        """
        if self._error is not None:
            raise self._error
        self._pending.append(chunk)
        if not self._opened:
            if self._held(chunk):
                return False  # it goes with the first words
            self._opened = True
        if self._sending is None:
            self._send_pending()
            return True
        return False

    async def flush(self) -> None:
        """Wait until every chunk added so far has been sent."""
        if self._sending is None and self._pending and self._error is None:
            self._send_pending()  # a role chunk alone, held for words that never came
        await self._until_idle()
        if self._error is not None:
            raise self._error

    async def abandon(self) -> None:
        """The run ended without its answer: wait for the send in flight, drop the rest.

        What was in flight may reach the caller (``text_sent`` says so); nothing
        queued after it is sent, so no delta follows the run's failure.
        """
        self._pending.clear()
        await self._until_idle()

    async def _until_idle(self) -> None:
        if self._sending is None:
            return
        if self._idle is None:
            self._idle = asyncio.get_running_loop().create_future()
        await self._idle

    def _send_pending(self) -> None:
        pieces, self._pending = self._pending, []
        delta, answers = self._pack(pieces)
        self.text_sent = self.text_sent or answers
        try:
            sending = self._send(delta)
        except Exception as exc:
            self._error = exc
            self._settle()
            return
        self._sending = sending
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Future[None]) -> None:
        self._sending = None
        if sending.cancelled():
            self._error = asyncio.CancelledError()
        elif (exc := sending.exception()) is not None:
            self._error = exc
        if self._pending and self._error is None:
            self._send_pending()
        else:
            self._settle()

    def _settle(self) -> None:
        idle, self._idle = self._idle, None
        if idle is not None and not idle.done():
            idle.set_result(None)


class DeltaPublisher(_Publisher[ChatCompletionChunk, Delta]):
    """One job's chunks, sent as deltas; a first chunk that only says who speaks waits
    for the words after it."""

    def _held(self, piece: ChatCompletionChunk) -> bool:
        return _only_a_role(piece)

    def _pack(self, pieces: list[ChatCompletionChunk]) -> tuple[Delta, bool]:
        delta = Delta(chunks=pieces, text="".join(chunk_text(chunk) for chunk in pieces))
        return delta, bool(delta.text)


_LIFECYCLE = frozenset({"response.created", "response.queued", "response.in_progress"})
"""Events that open a Responses stream and say nothing of the answer."""


class EventPublisher(_Publisher[ResponsesEvent, EventsDelta]):
    """One responses job's upstream Responses events, sent as deltas as they came.

    The events that open the stream wait for the first that carries some of the
    answer (an output item), so an attempt that fails right after opening (an
    upstream ``error`` event, say) sent nothing and may retry or fall back out of
    the caller's sight. Every send after them counts as the answer's: the caller
    writes each event as it came."""

    def _held(self, piece: ResponsesEvent) -> bool:
        return piece.type in _LIFECYCLE

    def _pack(self, pieces: list[ResponsesEvent]) -> tuple[EventsDelta, bool]:
        delta = EventsDelta(events=pieces, text="".join(event.text for event in pieces))
        return delta, True
