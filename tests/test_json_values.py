"""Which JSON values relayq can keep, and what a refused request body is told (in-process)."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from api.request_checks import body_problem, is_json, url_problem
from relayq.schemas.json_values import MAX_DEPTH, MAX_INT, MIN_INT, first_unkeepable


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    "value",
    [
        {"a": [1, 2.5, "é", "\U0001f600", True, None, MIN_INT, MAX_INT]},
        {"k\u00e9y": {"deep": nested(MAX_DEPTH - 2)}},
        [],
        "plain",
    ],
)
def test_what_relayq_can_keep_is_what_orjson_encodes(value: Any) -> None:
    assert first_unkeepable(value) is None
    orjson.dumps(value)


@pytest.mark.parametrize(
    ("value", "path", "words"),
    [
        ({"a": [1, {"b": MAX_INT + 1}]}, ("a", 1, "b"), "64-bit"),
        ({"a": MIN_INT - 1}, ("a",), "64-bit"),
        ({"a": 10**200}, ("a",), "(201 digits)"),
        ({"m": [{"c": "x\udfff"}]}, ("m", 0, "c"), "surrogate (\\udfff) at index 1"),
        ({"m": {"\ud800": "x"}}, ("m",), "the key '\\ud800'"),
        ({"n": float("inf")}, ("n",), "finite"),
        ({"n": float("nan")}, ("n",), "finite"),
    ],
)
def test_the_first_value_orjson_refuses_is_found_with_its_path(
    value: Any, path: tuple[str | int, ...], words: str
) -> None:
    found = first_unkeepable(value)

    assert found is not None
    assert found.path == path
    assert words in found.reason
    assert not found.too_deep


def test_the_first_in_document_order_is_reported() -> None:
    found = first_unkeepable({"a": ["ok", "\udfff"], "b": 2**70})

    assert found is not None
    assert found.path == ("a", 1)


def test_nesting_past_the_limit_is_refused_where_it_passes_it() -> None:
    found = first_unkeepable({"ok": nested(MAX_DEPTH - 1), "deep": nested(MAX_DEPTH)})

    assert found is not None
    assert found.too_deep
    assert found.path[0] == "deep"
    assert len(found.path) == MAX_DEPTH  # the array that is the 65th level


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/merge-patch+json", True),
        ("multipart/form-data; boundary=x", False),
        ("text/plain", False),
        (None, False),
    ],
)
def test_bodies_are_checked_when_fastapi_would_read_them_as_json(
    content_type: str | None, expected: bool
) -> None:
    assert is_json(content_type) is expected


def test_a_good_body_passes() -> None:
    assert body_problem(json.dumps({"model": "m", "seed": MAX_INT}).encode()) is None
    assert body_problem(b"\xef\xbb\xbf{}") is None


@pytest.mark.parametrize(
    ("body", "code", "param", "words"),
    [
        (b'{"a": 1,', "invalid_json", None, "line 1 column 9"),
        (b'{"a": "\xff"}', "invalid_json", None, "byte 0xff at position 7"),
        (b'{"a": NaN}', "invalid_json", None, "NaN is not a JSON value"),
        (b'{"a": -Infinity}', "invalid_json", None, "-Infinity"),
        (b'{"a": ' + b"9" * 5000 + b"}", "invalid_json", None, "over 4300 digits"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "invalid_json", None, "levels"),
        (json.dumps({"a": nested(100)}).encode(), "invalid_json", "a", "64 levels"),
        (b'{"a": {"b": 1e400}}', "invalid_value", "a.b", "Invalid 'a.b': the number is inf"),
        (b'{"a": [18446744073709551616]}', "invalid_value", "a[0]", "Invalid 'a[0]': "),
        (b'"\\udfff"', "invalid_value", None, "Invalid request body: the string"),
    ],
)
def test_a_refused_body_is_told_what_and_where(
    body: bytes, code: str, param: str | None, words: str
) -> None:
    error = body_problem(body)

    assert error is not None
    assert (error.status_code, error.code, error.param) == (400, code, param)
    assert words in error.message


@pytest.mark.parametrize(
    ("value", "path"),
    [({"a": ["x", "b\x00"]}, ("a", 1)), ({"m": {"k\x00": "v"}}, ("m",)), ("\x00", ())],
)
def test_a_nul_is_refused_in_strings_and_keys(value: Any, path: tuple[str | int, ...]) -> None:
    found = first_unkeepable(value)

    assert found is not None
    assert found.path == path
    assert "U+0000" in found.reason


@pytest.mark.parametrize(
    ("path", "query", "param"),
    [
        ("/v1/jobs/job_\x00", b"", None),
        ("/v1/jobs", b"limit=5&after=job_%00", "after"),
        ("/v1/jobs", b"model%00=x", "model\\x00"),
    ],
)
def test_a_nul_in_the_url_is_refused_naming_the_parameter(
    path: str, query: bytes, param: str | None
) -> None:
    error = url_problem(path, query)

    assert error is not None
    assert (error.status_code, error.code, error.param) == (400, "invalid_value", param)
    assert "U+0000" in error.message


def test_a_url_without_nul_passes() -> None:
    assert url_problem("/v1/jobs/job_01\u00e9", b"after=job_%01&model=caf%C3%A9") is None
