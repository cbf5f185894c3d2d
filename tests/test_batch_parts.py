"""The parts of batches that need no stack: fair shares, line checks, result lines, storage."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from relayq.batches.fairness import fair_shares
from relayq.batches.results import result_line
from relayq.batches.validation import LineValidator
from relayq.files.storage import DirectoryStorage, read_lines
from relayq.ids import id_sequence
from relayq.store.batches import RequestResult
from relayq.store.migrate import upgrade
from relayq.store.models import Base


def test_fair_shares_equalise_what_each_party_holds() -> None:
    # A holds 4 of a window of 6; B arrives: the 2 free slots go to B.
    assert fair_shares(2, holding={"a": 4}, wanting={"a": 100, "b": 100}) == {"b": 2}
    # Both empty: split evenly; the odd slot to the first listed.
    assert fair_shares(5, holding={}, wanting={"a": 100, "b": 100}) == {"a": 3, "b": 2}
    # A party wanting little gets all it wants; the rest goes to the others.
    assert fair_shares(10, holding={}, wanting={"a": 1, "b": 100, "c": 100}) == {
        "a": 1,
        "b": 5,
        "c": 4,
    }
    assert fair_shares(0, holding={}, wanting={"a": 3}) == {}
    assert fair_shares(4, holding={}, wanting={"a": 0}) == {}


def line(custom_id: str, **body: object) -> bytes:
    request = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}
    ).encode()


def test_the_validator_keeps_the_first_errors_and_counts_them_all() -> None:
    validator = LineValidator(endpoint="/v1/chat/completions", max_errors=2)
    valid = validator.check_lines(1, [line("a"), b"", b"nope", b"[]", line("a"), line("b")])
    assert [(r.line, r.custom_id, r.model) for r in valid] == [(1, "a", "m"), (6, "b", "m")]
    assert validator.error_count == 3
    assert [(e.line, e.code) for e in validator.errors] == [
        (3, "invalid_json_line"),
        (4, "invalid_request_line"),
    ]


def test_the_validator_names_the_body_field_at_fault() -> None:
    validator = LineValidator(endpoint="/v1/chat/completions", max_errors=10)
    assert validator.check(1, line("a", messages=[])) is None
    assert validator.check(2, line("b", temperature="hot")) is None
    assert validator.check(3, line("c", model=None)) is None
    assert [(e.line, e.param) for e in validator.errors] == [
        (1, "body.messages"),
        (2, "body.temperature"),
        (3, "body.model"),
    ]


def result(status: str, **fields: object) -> RequestResult:
    values: dict[str, object] = {"response": None, "error": None, **fields}
    return RequestResult(job_id="job_01abc", custom_id="c-1", status=status, **values)  # type: ignore[arg-type]


def test_result_lines_follow_openais_batch_output_format() -> None:
    ok, succeeded = result_line(result("succeeded", response={"object": "chat.completion"}))
    assert ok
    assert succeeded == {
        "id": "batch_req_01abc",
        "custom_id": "c-1",
        "response": {
            "status_code": 200,
            "request_id": "job_01abc",
            "body": {"object": "chat.completion"},
        },
        "error": None,
    }
    error = {"code": "provider_unavailable", "message": "upstream 503", "status_code": 503}
    ok, failed = result_line(result("failed", error=error))
    assert not ok
    assert failed["response"]["status_code"] == 503
    assert failed["response"]["body"]["error"]["message"] == "upstream 503"
    assert failed["response"]["body"]["error"]["type"] == "api_error"
    ok, expired = result_line(result("expired"))
    assert not ok
    assert expired["response"] is None
    assert expired["error"]["code"] == "batch_expired"
    assert result_line(result("cancelled"))[1]["error"]["code"] == "batch_cancelled"


def test_storage_writes_are_atomic_and_read_back_in_lines(tmp_path: Path) -> None:
    storage = DirectoryStorage(tmp_path / "files")

    async def scenario() -> list[bytes]:
        async with storage.writer("file_a") as writer:
            await writer.write(b"one\ntwo\n")
            await writer.write(b"x" * (3 * 1024 * 1024) + b"\nlast")
            assert not (tmp_path / "files" / "file_a").exists()  # not before the commit
            await writer.commit()
        async with storage.writer("file_b") as writer:
            await writer.write(b"never committed")
        return [line async for line in read_lines(storage, "file_a")]

    lines = asyncio.run(scenario())
    assert lines[:2] == [b"one", b"two"]
    assert len(lines[2]) == 3 * 1024 * 1024
    assert lines[3] == b"last"
    assert sorted(p.name for p in (tmp_path / "files").iterdir()) == ["file_a"]
    with pytest.raises(ValueError, match="invalid file name"):
        storage.writer("../escape")


def test_an_id_sequence_counts_up_in_one_moment() -> None:
    ids = id_sequence("job", now=1_700_000_000.0)
    taken = [next(ids) for _ in range(2000)]
    assert taken == sorted(taken)
    assert len(set(taken)) == 2000
    assert {len(i) for i in taken} == {30}


def test_the_migrations_build_exactly_the_models(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'schema.db'}"
    upgrade(url)
    engine = create_engine(url)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []
