"""Decoding server-sent events line by line."""

from __future__ import annotations

from relayq.providers.sse import ServerSentEvent, SSEDecoder


def decode(lines: list[str]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    if (last := decoder.flush()) is not None:
        events.append(last)
    return events


def test_events_end_at_blank_lines() -> None:
    lines = ['data: {"a": 1}', "", 'data: {"b": 2}', "", "data: [DONE]", ""]
    assert [e.data for e in decode(lines)] == ['{"a": 1}', '{"b": 2}', "[DONE]"]


def test_comments_and_empty_events_are_skipped() -> None:
    lines = [": OPENROUTER PROCESSING", "", "", "data: x", ""]
    assert decode(lines) == [ServerSentEvent(data="x")]


def test_multi_line_data_event_and_id() -> None:
    lines = ["event: error", "id: 7", "data: first", "data:second", ""]
    assert decode(lines) == [ServerSentEvent(data="first\nsecond", event="error", id="7")]


def test_event_type_resets_after_dispatch() -> None:
    events = decode(["event: error", "data: a", "", "data: b", ""])
    assert [e.event for e in events] == ["error", "message"]


def test_last_event_without_blank_line_is_kept() -> None:
    assert decode(["data: [DONE]"]) == [ServerSentEvent(data="[DONE]")]


def test_a_body_that_is_one_json_document_is_kept_whole() -> None:
    """What a server that ignores a request to stream sends, whatever its Content-Type says."""
    decoder = SSEDecoder()
    lines = ["", '{"id": "chatcmpl-1",', "", '  "choices": []}']
    assert [decoder.feed(line) for line in lines] == [None] * 4
    assert decoder.flush() is None
    assert decoder.json_body == '{"id": "chatcmpl-1",\n\n  "choices": []}'


def test_an_event_stream_has_no_json_body() -> None:
    decoder = SSEDecoder()
    lines = ["", ": keep-alive", 'data: {"a": 1}', "", '{"not": "an event"}', ""]
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    assert events == [ServerSentEvent(data='{"a": 1}')]
    assert decoder.json_body is None
