"""Values JSON can carry but relayq cannot keep get a 400 naming the field, never a 500.

Python's JSON parser takes integers of any size, lone UTF-16 surrogates
written as escapes and deep nesting; the JSON columns and events (orjson)
take none of them. Bodies are sent as ``json.dumps`` writes them, with
non-ASCII characters escaped, so a lone surrogate reaches the server as
``\\udfff``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.errors import error_of
from tests.jobs import body
from tests.stack import wait_until

ROUTES = ["/v1/jobs", "/v1/chat/completions"]
_JSON = {"content-type": "application/json"}


def post_json(client: httpx.Client, path: str, payload: Any) -> httpx.Response:
    return client.post(path, content=json.dumps(payload).encode(), headers=_JSON)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": 2**64}, "max_tokens"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -(2**63) - 1}, "seed"),
        ({"vendor_option": {"levels": [1, 2**70]}}, "vendor_option.levels[1]"),
    ],
)
def test_an_integer_beyond_64_bits_is_refused_naming_its_field(
    client: httpx.Client, path: str, extra: dict[str, Any], param: str
) -> None:
    error = error_of(post_json(client, path, body(**extra)), 400)

    assert (error["code"], error["param"]) == ("invalid_value", param)
    assert error["message"].startswith(f"Invalid '{param}': ")
    assert "64-bit" in error["message"]


def test_the_64_bit_bounds_themselves_are_accepted(client: httpx.Client) -> None:
    payload = body(model="mock-idle", seed=-(2**63), vendor_option=2**64 - 1)

    response = post_json(client, "/v1/jobs", payload)

    assert response.status_code == 202, response.text
    assert response.json()["request"]["vendor_option"] == 2**64 - 1


def test_an_integer_too_long_to_read_is_invalid_json(client: httpx.Client) -> None:
    text = '{"model": "mock", "messages": [{"role": "user", "content": "a"}], "n": ' + "9" * 5000
    response = client.post("/v1/jobs", content=(text + "}").encode(), headers=_JSON)

    error = error_of(response, 400)
    assert error["code"] == "invalid_json"
    assert "digits" in error["message"]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"messages": [{"role": "user", "content": "tail \udfff"}]}, "messages[0].content"),
        ({"metadata": {"tag": "\ud800"}}, "metadata.tag"),
        ({"metadata": {"\udfff": "value"}}, "metadata"),
        ({"user": "\udc00"}, "user"),
    ],
)
def test_a_lone_surrogate_is_refused_naming_its_field(
    client: httpx.Client, path: str, extra: dict[str, Any], param: str
) -> None:
    error = error_of(post_json(client, path, body(**extra)), 400)

    assert (error["code"], error["param"]) == ("invalid_value", param)
    assert "surrogate" in error["message"]


def test_a_surrogate_pair_is_one_character_and_accepted(client: httpx.Client) -> None:
    payload = body("smile \U0001f600", model="mock-idle")

    response = post_json(client, "/v1/jobs", payload)

    assert response.status_code == 202, response.text
    assert response.json()["request"]["messages"][0]["content"] == "smile \U0001f600"


def test_a_body_that_is_not_utf8_is_invalid_json(client: httpx.Client) -> None:
    content = b'{"model": "mock", "messages": [{"role": "user", "content": "\xff"}]}'

    error = error_of(client.post("/v1/jobs", content=content, headers=_JSON), 400)

    assert error["code"] == "invalid_json"
    assert "UTF-8" in error["message"]


def test_a_utf8_byte_order_mark_is_still_accepted(client: httpx.Client) -> None:
    content = b"\xef\xbb\xbf" + json.dumps(body(model="mock-idle")).encode()

    response = client.post("/v1/jobs", content=content, headers=_JSON)

    assert response.status_code == 202, response.text


@pytest.mark.parametrize("depth", [300, 100_000])
def test_json_nested_too_deep_is_invalid_json(client: httpx.Client, depth: int) -> None:
    if depth < 1000:
        content = json.dumps(body(vendor_option=nested(depth))).encode()
    else:  # beyond what json.dumps writes
        content = b'{"vendor_option": ' + b"[" * depth + b"]" * depth + b"}"

    error = error_of(client.post("/v1/jobs", content=content, headers=_JSON), 400)

    assert error["code"] == "invalid_json"
    assert "levels" in error["message"]


def test_nan_is_not_json(client: httpx.Client) -> None:
    content = json.dumps(body(vendor_option=float("nan"))).encode()

    error = error_of(client.post("/v1/jobs", content=content, headers=_JSON), 400)

    assert error["code"] == "invalid_json"
    assert "NaN" in error["message"]


def test_a_syntax_error_quotes_the_parsers_position(client: httpx.Client) -> None:
    content = b'{"model": "mock", "messages": ['

    error = error_of(client.post("/v1/jobs", content=content, headers=_JSON), 400)

    assert error["code"] == "invalid_json"
    assert "line 1 column 32" in error["message"]


# Each fails before any DNS lookup is made: the tests send nothing off this machine.
_BAD_HOSTS = ["http://a..invalid/hook", "https://.invalid/hook", f"http://{'a' * 64}.invalid/hook"]


@pytest.mark.parametrize("url", _BAD_HOSTS)
def test_a_webhook_url_whose_host_is_no_domain_name_is_refused(
    client: httpx.Client, url: str
) -> None:
    endpoint = error_of(client.put("/v1/webhook", json={"url": url}), 400)
    own = error_of(client.post("/v1/jobs", json=body(webhook={"url": url})), 400)

    assert (endpoint["code"], endpoint["param"]) == ("invalid_value", "url")
    assert (own["code"], own["param"]) == ("invalid_value", "webhook.url")
    assert "host" in endpoint["message"]


@pytest.mark.parametrize(
    ("method", "path", "payload", "param"),
    [
        ("GET", "/v1/files?after=file_%00", None, "after"),
        ("GET", "/v1/jobs?limit=5&model=mock%00", None, "model"),
        ("GET", "/v1/jobs/job_%00", None, None),
        ("POST", "/v1/jobs", body(model="mock-idle", metadata={"tag": "a\x00"}), "metadata.tag"),
        ("PUT", "/v1/webhook", {"url": "http://127.0.0.1:9/\x00"}, "url"),
        ("POST", "/v1/batches", {"input_file_id": "file_\x00"}, "input_file_id"),
    ],
)
def test_a_nul_character_is_refused_wherever_it_is(
    client: httpx.Client, method: str, path: str, payload: Any, param: str | None
) -> None:
    # PostgreSQL's text cannot hold U+0000: in a query these were 500s there.
    content = None if payload is None else json.dumps(payload).encode()

    response = client.request(method, path, content=content, headers=_JSON)

    error = error_of(response, 400)
    assert (error["code"], error["param"]) == ("invalid_value", param)
    assert "U+0000" in error["message"]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/batches"])
@pytest.mark.parametrize("window", ["9" * 400 + "h", "8761h", "31536001s"])
def test_a_completion_window_over_a_year_is_refused(
    client: httpx.Client, path: str, window: str
) -> None:
    # 400 nines read as a float are infinity: a batch's expires_at failed to print, a 500.
    if path == "/v1/jobs":
        payload = body(model="mock-idle", completion_window=window)
    else:
        request = {"custom_id": "a", "params": body(model="mock-idle")}
        payload = {"requests": [request], "completion_window": window}

    error = error_of(client.post(path, json=payload), 400)

    assert (error["code"], error["param"]) == ("invalid_value", "completion_window")
    assert "a year" in error["message"]


def _upload(client: httpx.Client, filename: str) -> httpx.Response:
    # Written out: httpx would percent-encode a NUL in the file name.
    line = json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"})
    content = (
        b'--B\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        b'--B\r\nContent-Disposition: form-data; name="file"; filename="'
        + filename.encode()
        + b'"\r\nContent-Type: application/jsonl\r\n\r\n'
        + line.encode()
        + b"\n\r\n--B--\r\n"
    )
    headers = {"content-type": "multipart/form-data; boundary=B"}
    return client.post("/v1/files", content=content, headers=headers)


@pytest.mark.parametrize(("filename", "words"), [("a\x00b.jsonl", "U+0000"), ("x" * 513, "512")])
def test_an_upload_whose_file_name_cannot_be_kept_is_refused(
    client: httpx.Client, filename: str, words: str
) -> None:
    # Both were 500s on PostgreSQL (a NUL in text; over its 512-character column).
    error = error_of(_upload(client, filename), 400)

    assert (error["code"], error["param"]) == ("invalid_value", "file")
    assert words in error["message"]


def test_the_longest_file_name_is_kept(client: httpx.Client) -> None:
    response = _upload(client, "x" * 506 + ".jsonl")

    assert response.status_code == 200, response.text
    assert response.json()["filename"] == "x" * 506 + ".jsonl"


@pytest.mark.parametrize(
    ("where", "position"),
    [
        ("header", "18446744073709551616-0"),
        ("query", "1-18446744073709551616"),
        ("query", "1-" + "9" * 5000),
        ("query", "\u0663-0"),  # an Arabic-Indic three: a digit to \d, not to Redis
    ],
)
def test_an_event_id_beyond_what_redis_holds_is_refused(
    client: httpx.Client, where: str, position: str
) -> None:
    # Redis stream ids are two 64-bit numbers: a larger one failed the stream
    # after its 200 had gone out.
    job = client.post("/v1/jobs", json=body(model="mock-idle")).json()
    url = f"/v1/jobs/{job['id']}/events"
    if where == "header":
        response = client.get(url, headers={"Last-Event-ID": position})
    else:
        response = client.get(url, params={"after": position})

    error = error_of(response, 400)
    assert error["code"] == "invalid_event_id"
    assert error["param"] == ("Last-Event-ID" if where == "header" else "after")


@pytest.mark.parametrize(
    ("line", "code", "param"),
    [
        ({"custom_id": "a\x00b"}, "invalid_custom_id", "custom_id"),
        ({"body": body(metadata_x={"tag": "\x00"})}, "invalid_request", "body.metadata_x.tag"),
        ({"body": body(vendor_option=nested(100))}, "invalid_request", "body.vendor_option"),
    ],
)
def test_a_batch_line_relayq_cannot_keep_fails_the_batch_naming_it(
    client: httpx.Client, line: dict[str, Any], code: str, param: str
) -> None:
    # A NUL custom_id left the batch 'validating' for good on PostgreSQL: the
    # worker's INSERT of its jobs failed.
    request = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body()}
    content = json.dumps({**request, **line}).encode() + b"\n"
    files = {"file": ("in.jsonl", content, "application/jsonl")}
    uploaded = client.post("/v1/files", data={"purpose": "batch"}, files=files).json()
    batch = client.post("/v1/batches", json={"input_file_id": uploaded["id"]}).json()

    ended: dict[str, Any] = {}

    def validated() -> bool:
        ended.update(client.get(f"/v1/batches/{batch['id']}").json())
        return bool(ended["status"] != "validating")

    wait_until(validated, timeout=20, interval=0.1)
    assert ended["status"] == "failed", ended
    [error] = ended["errors"]["data"]
    assert (error["code"], error["param"], error["line"]) == (code, param, 1)


def test_a_malformed_upload_is_invalid_body(client: httpx.Client) -> None:
    headers = {"content-type": "multipart/form-data"}  # no boundary

    response = client.post("/v1/files", content=b"garbage", headers=headers)

    error = error_of(response, 400)
    assert error["code"] == "invalid_body"
