"""A request's worst case: the most tokens it can use and the most they can cost.

Prompt tokens are bounded from above by bytes. Every tokenizer the vendors
use (byte-level BPE: OpenAI's ``o200k``/``cl100k``, Llama 3, Mistral's
Tekken; SentencePiece with byte fallback: Gemini, Llama 2) maps each token
to at least one byte of the UTF-8 text it encodes, so a text of ``b`` bytes
is at most ``b`` tokens. The bytes counted here are those of each message's
JSON (its content, name, tool calls, all escaped), which are no fewer than
the content's own, plus :data:`MESSAGE_OVERHEAD` tokens a message for the
chat template's role markers and separators (OpenAI's is 3 to 4, with 3 more
to prime the answer) and :data:`IMAGE_TOKENS` per image part, whose tokens do
not come from its URL's bytes (OpenAI's largest high-detail image is under
1,600). Tools and the response format are counted by their JSON's bytes.

Completion tokens are the request's ``max_completion_tokens`` or ``max_tokens``,
else the route's ``max_output_tokens``, else the setting
``RELAYQ_BUDGETS__DEFAULT_MAX_OUTPUT_TOKENS`` (4096), times ``n``. Without a
limit in the request the upstream is not held to that number: the worst case
then assumes it, and the job's real cost is booked all the same.

An embeddings request (``kind="embeddings"``) has no completion and no chat
template: its worst case is its inputs' UTF-8 bytes plus one token per token id,
and no completion tokens (:func:`embeddings_bound`). A legacy completion
(``kind="completions"``) counts its ``prompt`` the same way, and its answer as a
chat request's, times the larger of ``n`` and ``best_of``. An image generation
(``kind="images"``) counts its ``prompt``'s bytes, and
:data:`~relayq.schemas.images.IMAGE_OUTPUT_TOKENS` output tokens an image (``n``),
``gpt-image-1``'s largest image; a model that reports no tokens (DALL·E, Blackbox's)
costs nothing here. A response (``kind="responses"``) counts the JSON bytes of its
``instructions``, ``input`` and ``tools``, and its ``max_output_tokens`` as the
completion's limit.

The cost is that of the route's most expensive deployment for those tokens
(fallback may move a job to any of them), with its batch discount for a
batch request; a deployment without a price counts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from relayq.config.prices import ModelPrice
from relayq.config.routes import RouteSettings
from relayq.schemas.images import IMAGE_OUTPUT_TOKENS

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "WorstCase",
    "deployment_price",
    "embeddings_bound",
    "prompt_bound",
    "worst_case",
]

MESSAGE_OVERHEAD = 8
"""Tokens allowed per message beyond its bytes (role markers, separators), and once more
for the answer's priming."""
IMAGE_TOKENS = 2048
"""Tokens allowed per image part of a message."""
_PER = 1_000_000


@dataclass(frozen=True, slots=True)
class WorstCase:
    """The most a request can use: its prompt and completion tokens, and their cost."""

    prompt_tokens: int
    completion_tokens: int
    usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def prompt_bound(request: Mapping[str, Any]) -> int:
    """An upper bound on the prompt tokens of an OpenAI chat request (see the module)."""
    messages = request.get("messages") or []
    total = MESSAGE_OVERHEAD
    for message in messages:
        total += len(orjson.dumps(message)) + MESSAGE_OVERHEAD
        content = message.get("content") if isinstance(message, Mapping) else None
        if isinstance(content, list):
            total += IMAGE_TOKENS * sum(
                1 for part in content if isinstance(part, Mapping) and part.get("type") != "text"
            )
    for extra in ("tools", "functions", "response_format"):
        if request.get(extra) is not None:
            total += len(orjson.dumps(request[extra]))
    return total


def embeddings_bound(request: Mapping[str, Any]) -> int:
    """An upper bound on the tokens an OpenAI embeddings request's ``input`` holds: a
    string's UTF-8 bytes, a token id each."""
    value = request.get("input")
    items = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    if items and all(isinstance(item, int) for item in items):
        return len(items)  # one token array
    total = 0
    for item in items:
        if isinstance(item, str):
            total += len(item.encode())
        elif isinstance(item, list):
            total += len(item)
    return total


def _legacy_prompt_bound(request: Mapping[str, Any]) -> int:
    """A legacy completion's ``prompt`` bounded as an embeddings ``input`` is, plus the
    answer's priming."""
    return embeddings_bound({"input": request.get("prompt")}) + MESSAGE_OVERHEAD


def _completion_bound(request: Mapping[str, Any], route_cap: int) -> int:
    limit = request.get("max_completion_tokens") or request.get("max_tokens")
    per_choice = limit if isinstance(limit, int) and limit > 0 else route_cap
    n = request.get("n")
    return per_choice * (n if isinstance(n, int) and n > 0 else 1)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 1


def _cost(price: ModelPrice, prompt: int, completion: int, *, batch: bool) -> float:
    cost = (prompt * price.input + completion * price.output) / _PER
    return cost * (1 - price.batch_discount) if batch else cost


def worst_case(
    request: Mapping[str, Any],
    *,
    route: RouteSettings | None,
    default_max_output: int,
    batch: bool = False,
    kind: str = "chat",
) -> WorstCase:
    """``request``'s worst case on ``route`` (None: a route no longer configured, which
    prices nothing); ``kind``: the job's (``embeddings``: inputs only, no completion)."""
    cap = (route.max_output_tokens if route is not None else None) or default_max_output
    if kind == "embeddings":
        prompt, completion = embeddings_bound(request), 0
    elif kind == "images":
        prompt = embeddings_bound({"input": request.get("prompt")})
        completion = IMAGE_OUTPUT_TOKENS * _count(request.get("n"))
    elif kind == "responses":
        shown = {k: request.get(k) for k in ("instructions", "input", "tools")}
        prompt = embeddings_bound({"input": orjson.dumps(shown).decode()})
        completion = _completion_bound({"max_tokens": request.get("max_output_tokens")}, cap)
    elif kind == "completions":
        prompt = _legacy_prompt_bound(request)
        choices = max(_count(request.get("n")), _count(request.get("best_of")))
        completion = _completion_bound({**request, "n": choices}, cap)
    else:
        prompt = prompt_bound(request)
        completion = _completion_bound(request, cap)
    prices: Sequence[ModelPrice] = [
        d.price for d in (route.deployments if route is not None else []) if d.price is not None
    ]
    usd = max((_cost(p, prompt, completion, batch=batch) for p in prices), default=0.0)
    return WorstCase(prompt_tokens=prompt, completion_tokens=completion, usd=usd)


def deployment_price(
    route: RouteSettings | None, *, index: int, provider: str, model: str
) -> ModelPrice | None:
    """The price of the deployment of ``route`` a job ended on: the one at ``index`` if it
    is still ``provider``'s ``model``, else the first such one (None: unpriced or gone)."""
    if route is None:
        return None
    deployments = route.deployments
    if index < len(deployments) and (deployments[index].provider, deployments[index].model) == (
        provider,
        model,
    ):
        return deployments[index].price
    for deployment in deployments:
        if (deployment.provider, deployment.model) == (provider, model):
            return deployment.price
    return None
