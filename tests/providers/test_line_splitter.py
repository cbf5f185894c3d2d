"""Splitting a body's bytes into lines as they arrive, however the reads cut them."""

from __future__ import annotations

import itertools
import re

import pytest

from relayq.providers.http import LineSplitter


def split(*chunks: bytes) -> list[str]:
    splitter = LineSplitter()
    lines = [line for chunk in chunks for line in splitter.feed(chunk)]
    return lines + splitter.flush()


def reference(body: bytes) -> list[str]:
    """The SSE spec's lines: ends at CRLF, LF or CR; a last unterminated line counts."""
    lines = re.split(rb"\r\n|\r|\n", body)
    if lines[-1] == b"":
        lines.pop()
    return [line.decode("utf-8", "replace") for line in lines]


@pytest.mark.parametrize(
    ("chunks", "lines"),
    [
        ([b"a\nb\n"], ["a", "b"]),
        ([b"a\r\nb\r\n"], ["a", "b"]),
        ([b"a\rb\r"], ["a", "b"]),
        ([b"a\n\nb\n"], ["a", "", "b"]),
        ([b"a\r\n\r\nb"], ["a", "", "b"]),
        ([b"a\r", b"\nb\n"], ["a", "b"]),  # CRLF split across reads: one ending
        ([b"a\r", b"\r\nb\n"], ["a", "", "b"]),
        ([b"a\r", b"", b"\nb"], ["a", "b"]),  # an empty read changes nothing
        ([b"da", b"ta: x", b"\n"], ["data: x"]),
        ([b"caf\xc3", b"\xa9\n"], ["caf\u00e9"]),  # a character split across reads
        ([b"\xe2", b"\x82", b"\xac"], ["\u20ac"]),
        ([b"last line"], ["last line"]),
        ([b"x\n", b"last"], ["x", "last"]),
        ([b"bad \xff\n"], ["bad \ufffd"]),
        (["\u2028 and \x85 end no line".encode()], ["\u2028 and \x85 end no line"]),
        ([b""], []),
        ([b"\n"], [""]),
    ],
)
def test_lines(chunks: list[bytes], lines: list[str]) -> None:
    assert split(*chunks) == lines


def test_a_line_ending_in_cr_is_given_without_waiting_for_the_next_read() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"data: x\r") == ["data: x"]
    assert splitter.feed(b"\r") == [""]
    assert splitter.feed(b"\n") == []
    assert splitter.flush() == []


def test_every_way_of_cutting_a_body_into_three_reads_gives_the_same_lines() -> None:
    body = "id: 1\r\ndata: caf\u00e9\r\rdata: \u20ac\n\n: c\rtail".encode()
    expected = reference(body)
    for i, j in itertools.combinations_with_replacement(range(len(body) + 1), 2):
        assert split(body[:i], body[i:j], body[j:]) == expected, (i, j)
