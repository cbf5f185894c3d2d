"""Decoding an upstream's server-sent events stream, line by line, without I/O.

Streaming vendors send ``text/event-stream`` (the WHATWG HTML "server-sent
events" format): ``field: value`` lines, an event ending at a blank line,
``:`` comment lines as keep-alives (OpenRouter sends ``: OPENROUTER
PROCESSING``). The decoder is fed the body's lines by whoever reads it, so
adapters and their tests share one parser and the tests need no network.

Some servers ignore a request to stream and answer with the whole JSON
document instead, whatever ``Content-Type`` they label it with (a label a
server may get wrong). No event stream's first line opens a JSON object or
array, so the decoder tells them apart there: such a body yields no events
and is kept whole in :attr:`SSEDecoder.json_body` for the adapter's
non-streamed parser.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "ServerSentEvent"]


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One dispatched event: its type, its data lines joined by ``\\n``, its id."""

    data: str
    event: str = "message"
    id: str | None = None


class SSEDecoder:
    """Assembles events from lines; one decoder per response body."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._started = False
        self._json: list[str] | None = None

    @property
    def json_body(self) -> str | None:
        """The body fed so far, when it is one JSON document rather than events."""
        return None if self._json is None else "\n".join(self._json)

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line (without its line ending); return the event it completes."""
        if self._json is not None:
            self._json.append(line)
            return None
        if not self._started and line.strip():
            self._started = True
            if line.lstrip().startswith(("{", "[")):
                self._json = [line]
                return None
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self._id = value
        return None

    def flush(self) -> ServerSentEvent | None:
        """The event left pending when the body ended without a final blank line.

        The SSE spec drops it; we keep it, because some OpenAI-compatible
        servers end ``data: [DONE]`` with a single newline.
        """
        return self._dispatch()

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._data:
            self._event = ""
            return None
        event = ServerSentEvent(
            data="\n".join(self._data), event=self._event or "message", id=self._id
        )
        self._data = []
        self._event = ""
        return event
