"""The response cache's keys: one per request, per kind, per key and route."""

from __future__ import annotations

import redis.asyncio as aioredis

from relayq.execution.cache import ResponseCache
from relayq.schemas.chat import ChatCompletionRequest
from relayq.schemas.completions import TextCompletionRequest
from relayq.schemas.embeddings import EmbeddingRequest
from relayq.schemas.images import ImageGenerationRequest
from relayq.schemas.jobs import CallRequest
from relayq.schemas.responses import ResponsesRequest


def test_each_kind_has_entries_of_its_own_and_a_repeat_finds_its_entry() -> None:
    cache = ResponseCache(aioredis.Redis(), key_prefix="relayq-test")  # key() sends nothing
    requests: list[CallRequest] = [
        ChatCompletionRequest.model_validate(
            {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        ),
        EmbeddingRequest.model_validate({"model": "m", "input": "hi"}),
        TextCompletionRequest.model_validate({"model": "m", "prompt": "hi"}),
        ImageGenerationRequest.model_validate({"model": "m", "prompt": "hi"}),
        ResponsesRequest.model_validate({"model": "m", "input": "hi"}),
    ]

    keys = [cache.key(key_id="key_a", route="m", request=request) for request in requests]
    again = [cache.key(key_id="key_a", route="m", request=request) for request in requests]
    other_key = cache.key(key_id="key_b", route="m", request=requests[0])
    other_route = cache.key(key_id="key_a", route="n", request=requests[0])

    assert len(set(keys)) == len(requests)
    assert again == keys
    assert other_key not in keys
    assert other_route not in keys
