"""The embeddings request and response: what is refused and how it is named, base64, joining."""

from __future__ import annotations

import array
import base64
from typing import Any

import pytest
from pydantic import ValidationError

from api.errors import validation_error
from relayq.providers import embedding_field_errors
from relayq.schemas.embeddings import (
    MAX_INPUTS,
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
    decode_vector,
    encode_vector,
    join_embeddings,
)


def refusal(value: Any, **fields: Any) -> tuple[str | None, str]:
    """The param and message the API answers a request with ``input: value`` with."""
    with pytest.raises(ValidationError) as raised:
        EmbeddingRequest.model_validate({"model": "m", "input": value, **fields})
    error = validation_error(raised.value.errors())
    return error.param, error.message


@pytest.mark.parametrize(
    ("value", "param", "message"),
    [
        ("", "input", "Invalid 'input': must not be an empty string."),
        ([], "input", "Invalid 'input': must not be an empty array."),
        (["a", ""], "input[1]", "Invalid 'input[1]': must not be an empty string."),
        ([[1], []], "input[1]", "Invalid 'input[1]': must not be an empty token array."),
        ([1, -2], "input[1]", "Invalid 'input[1]': must be a token id (an integer of 0 or more)."),
        ([[1, "x"]], "input[0][1]", "Invalid 'input[0][1]': must be a token id"),
        (["a", [1]], "input", "Invalid 'input': must not mix strings and token arrays."),
        ([True], "input[0]", "Invalid 'input[0]': must be a string or an array of token ids."),
        (5, "input", "Invalid 'input': must be a string, an array of strings or an array"),
        (["a"] * (MAX_INPUTS + 1), "input", "must hold at most 2048 items, not 2049."),
    ],
)
def test_bad_input_is_named(value: Any, param: str, message: str) -> None:
    got_param, got_message = refusal(value)
    assert got_param == param
    assert message in got_message


def test_other_fields_are_checked() -> None:
    assert refusal("a", dimensions=0)[0] == "dimensions"
    assert refusal("a", encoding_format="int8")[0] == "encoding_format"
    assert refusal("a", model="")[0] == "model"


@pytest.mark.parametrize(
    ("value", "items", "tokens"),
    [
        ("a", ["a"], False),
        (["a", "b"], ["a", "b"], False),
        ([1, 2], [[1, 2]], True),
        ([[1], [2, 3]], [[1], [2, 3]], True),
        (["a"] * MAX_INPUTS, ["a"] * MAX_INPUTS, False),
        ([7] * (MAX_INPUTS + 1), [[7] * (MAX_INPUTS + 1)], True),  # one long input
    ],
)
def test_inputs_are_one_item_per_embedding(value: Any, items: list[Any], tokens: bool) -> None:
    request = EmbeddingRequest.model_validate({"model": "m", "input": value})
    assert request.inputs() == items
    assert request.has_tokens is tokens
    assert request.encoding_format == "float"


def test_base64_is_little_endian_float32_as_the_sdk_decodes_it() -> None:
    vector = [0.1, -2.5, 3.0, 1e-8]
    text = encode_vector(vector)
    raw = base64.b64decode(text)
    assert raw[:4] == bytes.fromhex("cdcccc3d")  # 0.1 as float32, little-endian
    assert array.array("f", raw).tolist() == pytest.approx(vector, rel=1e-6)
    assert decode_vector(text) == array.array("f", raw).tolist()


def test_embeddings_convert_between_formats() -> None:
    floats = Embedding(index=0, embedding=[0.5, -1.0])
    encoded = floats.encoded("base64")
    assert isinstance(encoded.embedding, str)
    assert encoded.encoded("float").embedding == [0.5, -1.0]
    assert floats.encoded("float") is floats


def test_parts_join_in_order_with_usage_summed() -> None:
    def part(*values: float, tokens: int, model: str) -> EmbeddingResponse:
        # Given out of order: the index decides.
        data = [Embedding(index=i, embedding=[v]) for i, v in reversed(list(enumerate(values)))]
        usage = EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens)
        return EmbeddingResponse(data=data, model=model, usage=usage)

    joined = join_embeddings(
        [part(1, 2, tokens=3, model="m-1"), part(3, tokens=4, model="m-2")],
        encoding_format="float",
    )
    assert [(item.index, item.embedding) for item in joined.data] == [
        (0, [1.0]),
        (1, [2.0]),
        (2, [3.0]),
    ]
    assert (joined.usage.prompt_tokens, joined.usage.total_tokens) == (7, 7)
    assert joined.model == "m-1"
    encoded = join_embeddings([part(1, tokens=0, model="m")], encoding_format="base64")
    assert encoded.data[0].embedding == encode_vector([1.0])


def test_one_part_as_asked_is_passed_on_uncopied() -> None:
    data = [Embedding(index=0, embedding=[1.0]), Embedding(index=1, embedding=[2.0])]
    whole = EmbeddingResponse(data=data, model="m")
    assert join_embeddings([whole], encoding_format="float") is whole
    assert join_embeddings([whole], encoding_format="base64") is not whole
    shuffled = EmbeddingResponse(data=list(reversed(data)), model="m")
    joined = join_embeddings([shuffled], encoding_format="float")
    assert [item.embedding for item in joined.data] == [[1.0], [2.0]]


def test_extra_fields_other_than_controls_are_named() -> None:
    errors = embedding_field_errors({"mock": {"latency_ms": 1}, "foo": 1, "openai": {}})
    assert [(error["type"], error["loc"]) for error in errors] == [
        ("extra_forbidden", ("foo",)),
        ("extra_forbidden", ("openai",)),
    ]
    assert embedding_field_errors({"mock": None}) == []
