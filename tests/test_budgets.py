"""Key budgets: a job reserves its worst case as it is stored, its end books its real cost.

Over HTTP on the shared stack (``mock-budgeted``: $1000 per million prompt tokens, $2000
per million completion tokens, a batch discount of half, a route cap of 64 completion
tokens; ``mock-budgeted-idle``: the same on a provider no worker consumes, so its jobs
stay queued), and on the store and the reconciler directly for what a stack cannot
stage (several API processes at once, an end written without its settlement).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text, update

from relayq.budgets.estimate import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD,
    embeddings_bound,
    prompt_bound,
    worst_case,
)
from relayq.budgets.reservations import BudgetLimits, OverBudget, Reservation, dollars
from relayq.budgets.windows import Period, window_of
from relayq.config.prices import ModelPrice, job_cost
from relayq.config.routes import RouteSettings, RoutingConfig
from relayq.config.settings import Settings
from relayq.intake.inserts import JobInserts
from relayq.keys import hash_key
from relayq.queueing.broker import Enqueuer
from relayq.recovery.reconciler import Reconciler
from relayq.schemas.images import IMAGE_OUTPUT_TOKENS
from relayq.schemas.jobs import JobStatus
from relayq.store import Database, sync_url
from relayq.store.claims import claim_jobs
from relayq.store.jobs import cancel_job
from relayq.store.keys import create_key
from relayq.store.models import ApiKey, Job
from relayq.store.outcomes import Finish, Outcome, finish_jobs
from relayq.store.retries import expire_due
from relayq.store.spend import standing
from tests.batches import jsonl, request_line, upload, wait_for_batch
from tests.conftest import KeyFactory
from tests.fakes.openai_server import FakeOpenAI
from tests.jobs import body, mock_job, submit, wait_for_status
from tests.services import free_port
from tests.stack import Stack, wait_until

PRICE = ModelPrice(input=1000.0, output=2000.0, batch_discount=0.5)
"""``mock-budgeted``'s price (tests/conftest.py)."""
ROUTE = RouteSettings.model_validate(
    {"deployments": [{"provider": "mock", "model": "mock", "price": PRICE.model_dump()}]}
)


# --- the worst case ------------------------------------------------------------------


@pytest.mark.usefixtures("sqlite_only")
def test_a_small_budget_reads_in_millionths_of_a_dollar_not_as_nothing() -> None:
    small = BudgetLimits(period=Period.DAY, usd=0.0004, tokens=None)
    assert small.describe() == "$0.000400 per day"
    assert [dollars(a) for a in (0.0, 0.01, 5, 1234.5)] == ["$0.00", "$0.01", "$5.00", "$1,234.50"]


@pytest.mark.usefixtures("sqlite_only")
def test_the_prompt_bound_counts_every_byte_and_an_overhead_per_message() -> None:
    text_ = "naïve café ✓ " * 10  # multi-byte characters: more bytes than characters
    request = {"messages": [{"role": "user", "content": text_}]}
    bound = prompt_bound(request)
    assert bound >= len(text_.encode()) + 2 * MESSAGE_OVERHEAD
    with_image = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": text_},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                ],
            }
        ]
    }
    assert prompt_bound(with_image) >= len(text_.encode()) + IMAGE_TOKENS
    tools = {**request, "tools": [{"type": "function", "function": {"name": "f" * 100}}]}
    assert prompt_bound(tools) >= bound + 100


@pytest.mark.usefixtures("sqlite_only")
def test_the_completion_bound_is_the_requests_limit_else_the_routes_cap_else_the_default() -> None:
    messages = [{"role": "user", "content": "hi"}]
    prompt = prompt_bound({"messages": messages})
    capped = ROUTE.model_copy(update={"max_output_tokens": 64})
    limited = worst_case(
        {"messages": messages, "max_tokens": 10, "n": 3}, route=capped, default_max_output=4096
    )
    assert limited.completion_tokens == 30  # per choice, times n
    newer = worst_case(
        {"messages": messages, "max_completion_tokens": 7}, route=capped, default_max_output=4096
    )
    assert newer.completion_tokens == 7
    assert worst_case({"messages": messages}, route=capped, default_max_output=4096) == (
        worst_case({"messages": messages, "max_tokens": 64}, route=capped, default_max_output=1)
    )
    default = worst_case({"messages": messages}, route=ROUTE, default_max_output=4096)
    assert default.completion_tokens == 4096
    assert default.usd == pytest.approx((prompt * 1000.0 + 4096 * 2000.0) / 1e6)


@pytest.mark.usefixtures("sqlite_only")
def test_the_cost_is_the_dearest_deployments_and_a_batch_gets_its_discount() -> None:
    route = RouteSettings.model_validate(
        {
            "deployments": [
                {"provider": "a", "model": "m", "price": {"input": 1.0, "output": 1.0}},
                {"provider": "b", "model": "m", "price": {"input": 3.0, "output": 5.0}},
                {"provider": "c", "model": "m"},  # unpriced: counts nothing
            ]
        }
    )
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 100}
    worst = worst_case(request, route=route, default_max_output=4096)
    assert worst.usd == pytest.approx((worst.prompt_tokens * 3.0 + 100 * 5.0) / 1e6)
    batch = worst_case(request, route=ROUTE, default_max_output=4096, batch=True)
    full = worst_case(request, route=ROUTE, default_max_output=4096)
    assert batch.usd == pytest.approx(full.usd / 2)
    assert worst_case(request, route=None, default_max_output=4096).usd == 0.0


@pytest.mark.usefixtures("sqlite_only")
def test_an_embeddings_worst_case_is_its_inputs_bytes_and_no_completion() -> None:
    """Embeddings answer no tokens: only ``input`` counts, a byte or a token id a token."""
    assert embeddings_bound({"input": "héllo"}) == 6  # é is two bytes
    assert embeddings_bound({"input": ["ab", "cde"]}) == 5
    assert embeddings_bound({"input": [7, 8, 9]}) == 3  # one token array
    assert embeddings_bound({"input": [[1, 2], [3]]}) == 3
    worst = worst_case(
        {"model": "m", "input": ["ab", "cde"], "max_tokens": 99},
        route=ROUTE,
        default_max_output=4096,
        kind="embeddings",
    )
    assert (worst.prompt_tokens, worst.completion_tokens) == (5, 0)
    assert worst.usd == pytest.approx(5 * 1000.0 / 1_000_000)


def test_a_legacy_completions_worst_case_is_its_prompt_and_its_answer_times_choices() -> None:
    request = {"model": "m", "prompt": ["ab", "cde"], "max_tokens": 10, "n": 2, "best_of": 3}
    worst = worst_case(request, route=ROUTE, default_max_output=4096, kind="completions")
    assert (worst.prompt_tokens, worst.completion_tokens) == (5 + MESSAGE_OVERHEAD, 30)
    capped = worst_case(
        {"model": "m", "prompt": "x"}, route=ROUTE, default_max_output=64, kind="completions"
    )
    assert capped.completion_tokens == 64  # no max_tokens: the route's cap, else the default


def test_an_images_worst_case_is_its_prompt_and_the_largest_image_times_n() -> None:
    request = {"model": "m", "prompt": "héllo", "n": 3, "size": "1024x1024"}
    worst = worst_case(request, route=ROUTE, default_max_output=64, kind="images")
    assert (worst.prompt_tokens, worst.completion_tokens) == (6, 3 * IMAGE_OUTPUT_TOKENS)
    one = worst_case({"prompt": "x"}, route=ROUTE, default_max_output=64, kind="images")
    assert one.completion_tokens == IMAGE_OUTPUT_TOKENS  # no route cap: an image is no text


def test_an_embeddings_job_reserves_its_inputs_and_settles_its_cost(
    tenant: Callable[..., Tenant],
) -> None:
    me = tenant(usd=10.0)
    idle = {"kind": "embeddings", "model": "mock-budgeted-idle", "input": ["ab", "cde"]}
    queued = submit(me.client, idle)  # no worker consumes it: its reservation stays
    assert _budget(me.client)["reserved"] == {"usd": pytest.approx(5 * 1000.0 / 1e6), "tokens": 5}
    assert me.client.post(f"/v1/jobs/{queued['id']}/cancel").status_code == 200

    ran = {"kind": "embeddings", "model": "mock-budgeted", "input": "three small words"}
    job = wait_for_status(me.client, submit(me.client, ran)["id"], {"succeeded", "failed"})

    assert job["status"] == "succeeded", job["error"]
    assert job["cost_usd"] == pytest.approx(3 * 1000.0 / 1e6)  # the mock: a token a word
    state = _budget(me.client)
    assert state["reserved"] == {"usd": 0.0, "tokens": 0}
    assert state["spent"] == {"usd": pytest.approx(job["cost_usd"]), "tokens": 3}


def test_windows_are_the_utc_day_or_month() -> None:
    late = 1_796_515_199.0  # 2026-12-05 23:59:59 UTC
    assert window_of(Period.DAY, late) == "2026-12-05"
    assert window_of(Period.DAY, late + 1) == "2026-12-06"
    assert window_of("month", late) == "2026-12"
    assert window_of(Period.MONTH, 1_798_761_600.0) == "2027-01"  # 2027-01-01 00:00 UTC


# --- over HTTP -----------------------------------------------------------------------


@dataclass
class Tenant:
    client: httpx.Client
    key_id: str


def _sql(database_url: str, statement: str, **params: Any) -> list[Any]:
    engine = create_engine(sync_url(database_url))
    try:
        with engine.begin() as connection:
            result = connection.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        engine.dispose()


@pytest.fixture
def tenant(
    stack: Stack, make_key: KeyFactory, database_url: str
) -> Iterator[Callable[..., Tenant]]:
    """Makes a fresh key with a budget (set before its first request) and its client."""
    clients: list[httpx.Client] = []

    def make(*, period: str = "day", usd: float | None = None, tokens: int | None = None) -> Tenant:
        secret = make_key()
        ((key_id,),) = _sql(
            database_url,
            "UPDATE api_keys SET budget_period = :period, budget_usd = :usd, "
            "budget_tokens = :tokens WHERE key_hash = :hash RETURNING id",
            period=period,
            usd=usd,
            tokens=tokens,
            hash=hash_key(secret),
        )
        client = httpx.Client(
            base_url=stack.base_url, headers={"Authorization": f"Bearer {secret}"}, timeout=30
        )
        clients.append(client)
        return Tenant(client, key_id)

    yield make
    for client in clients:
        client.close()


_SPENT = (
    'INSERT INTO budget_spend (key_id, "window", reserved_usd, reserved_tokens, spent_usd, '
    "spent_tokens) VALUES (:key, :window, :reserved, 0, :usd, 0)"
)
"""A window's row with ``:usd`` spent (``:reserved`` replaced by a literal)."""


def _budget(client: httpx.Client) -> dict[str, Any]:
    answer = client.get("/v1/budget")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def _assert_insufficient_quota(response: httpx.Response, budget: str) -> None:
    assert response.status_code == 429, response.text
    error = response.json()["error"]
    assert error["type"] == "insufficient_quota"
    assert error["code"] == "insufficient_quota"
    assert error["param"] is None
    assert budget in error["message"]


def _priced(text_: str = "Hello budget", **extra: Any) -> dict[str, Any]:
    return body(text_, model="mock-budgeted", **extra)


def _worst(payload: dict[str, Any], *, cap: int = 64) -> tuple[float, int]:
    request = {k: v for k, v in payload.items() if k != "mock"}
    route = ROUTE.model_copy(update={"max_output_tokens": cap})
    worst = worst_case(request, route=route, default_max_output=4096)
    return worst.usd, worst.tokens


def test_a_job_over_budget_is_refused_with_insufficient_quota_before_any_call(
    tenant: Callable[..., Tenant],
) -> None:
    payload = _priced(max_tokens=8)
    usd, _ = _worst(payload)
    me = tenant(usd=usd / 2)

    _assert_insufficient_quota(me.client.post("/v1/jobs", json=payload), "per day")
    sync = me.client.post("/v1/chat/completions", json=payload)
    _assert_insufficient_quota(sync, "per day")

    # Nothing was stored, so nothing can have been sent to a provider.
    assert me.client.get("/v1/jobs").json()["data"] == []
    state = _budget(me.client)
    assert state["reserved"] == {"usd": 0.0, "tokens": 0}
    assert state["spent"] == {"usd": 0.0, "tokens": 0}
    assert state["remaining"]["usd"] == pytest.approx(usd / 2)


def test_an_upstream_hears_nothing_of_a_refused_call(
    tenant: Callable[..., Tenant], fake_openai: FakeOpenAI
) -> None:
    """The wire-level fake of OpenAI records every call it gets: the refused one is not
    among them, while the same call of a key within its budget is."""
    marker = f"budget-{time.time_ns()}"
    payload = body(marker, model="gpt-4o-mini", max_tokens=8)

    def heard() -> int:
        return sum(marker in str(request.json) for request in fake_openai.requests)

    refused = tenant(tokens=10).client.post("/v1/chat/completions", json=payload)
    _assert_insufficient_quota(refused, "10 tokens per day")
    allowed = tenant(tokens=10_000).client.post("/v1/chat/completions", json=payload)
    assert allowed.status_code == 200, allowed.text
    assert heard() == 1


def test_a_finished_job_books_its_real_cost_and_frees_the_rest(
    tenant: Callable[..., Tenant], database_url: str
) -> None:
    me = tenant(usd=10.0, tokens=100_000)
    payload = _priced(max_tokens=8, mock={"tokens": 8})
    job = wait_for_status(me.client, submit(me.client, payload)["id"], {"succeeded"})
    usage = job["usage"]
    cost = job_cost(PRICE, usage, batch=False)
    assert cost is not None
    assert cost > 0

    state = _budget(me.client)
    assert state["period"] == "day"
    assert state["window"] == window_of(Period.DAY, time.time())
    assert state["reserved"] == {"usd": 0.0, "tokens": 0}
    assert state["spent"]["usd"] == pytest.approx(cost)
    assert state["spent"]["tokens"] == usage["total_tokens"]
    assert state["remaining"]["usd"] == pytest.approx(10.0 - cost)
    ((stored, window),) = _sql(
        database_url, "SELECT cost_usd, budget_window FROM jobs WHERE id = :id", id=job["id"]
    )
    assert stored == pytest.approx(cost)
    assert window is None  # settled


def test_a_sync_call_of_a_budgeted_key_is_stored_first_and_settled(
    tenant: Callable[..., Tenant],
) -> None:
    me = tenant(usd=10.0)
    answer = me.client.post("/v1/chat/completions", json=_priced(max_tokens=8, mock={"tokens": 5}))
    assert answer.status_code == 200, answer.text
    cost = job_cost(PRICE, answer.json()["usage"], batch=False)

    def settled() -> bool:
        return bool(_budget(me.client)["spent"]["usd"] == pytest.approx(cost))

    wait_until(settled, timeout=10, interval=0.1)
    assert _budget(me.client)["reserved"] == {"usd": 0.0, "tokens": 0}


def test_a_sync_embeddings_call_of_a_budgeted_key_is_settled(
    tenant: Callable[..., Tenant],
) -> None:
    me = tenant(usd=10.0)
    payload = {"model": "mock-budgeted", "input": ["four words in here"]}
    answer = me.client.post("/v1/embeddings", json=payload)
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"]["prompt_tokens"] == 4
    cost = job_cost(PRICE, answer.json()["usage"], batch=False)

    def settled() -> bool:
        return bool(_budget(me.client)["spent"]["usd"] == pytest.approx(cost))

    wait_until(settled, timeout=10, interval=0.1)
    assert _budget(me.client)["reserved"] == {"usd": 0.0, "tokens": 0}


def test_cancel_refunds_the_reservation(tenant: Callable[..., Tenant]) -> None:
    me = tenant(usd=10.0)
    payload = body("Hello budget", model="mock-budgeted-idle", max_tokens=8)
    usd, tokens = _worst(payload)
    job = submit(me.client, payload)  # no worker consumes it: it stays queued

    held = _budget(me.client)
    assert held["reserved"]["usd"] == pytest.approx(usd)
    assert held["reserved"]["tokens"] == tokens
    assert held["remaining"]["usd"] == pytest.approx(10.0 - usd)

    assert me.client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    state = _budget(me.client)
    assert state["reserved"] == {"usd": 0.0, "tokens": 0}
    assert state["spent"] == {"usd": 0.0, "tokens": 0}


def test_a_failed_job_refunds_its_reservation(tenant: Callable[..., Tenant]) -> None:
    me = tenant(tokens=10_000)
    payload = body(
        "Hello", model="mock-faulty", max_tokens=8, mock={"fault": "error", "status": 400}
    )
    job = wait_for_status(me.client, submit(me.client, payload)["id"], {"failed"})
    assert job["usage"] is None
    state = _budget(me.client)
    assert state["reserved"] == {"usd": 0.0, "tokens": 0}
    assert state["spent"] == {"usd": 0.0, "tokens": 0}


def test_a_tokens_budget_refuses_what_would_pass_it_until_a_job_ends(
    tenant: Callable[..., Tenant],
) -> None:
    payload = body("Hello budget", model="mock-budgeted-idle", max_tokens=8)
    _, tokens = _worst(payload)
    me = tenant(tokens=tokens + tokens // 2)  # room for one job, not two
    first = submit(me.client, payload)
    _assert_insufficient_quota(me.client.post("/v1/jobs", json=payload), "tokens per day")

    me.client.post(f"/v1/jobs/{first['id']}/cancel").raise_for_status()
    submit(me.client, payload)  # its tokens came back
    assert _budget(me.client)["reserved"]["tokens"] == tokens


def test_each_day_is_a_window_of_its_own(tenant: Callable[..., Tenant], database_url: str) -> None:
    me = tenant(usd=1.0)
    now = time.time()
    today, yesterday = window_of(Period.DAY, now), window_of(Period.DAY, now - 86_400)
    spent = _SPENT.replace(":reserved", "0")
    _sql(database_url, spent, key=me.key_id, window=yesterday, usd=1.0)  # yesterday: used up
    payload = body("Hello budget", model="mock-budgeted-idle", max_tokens=8)
    submit(me.client, payload)
    assert _budget(me.client)["window"] == today

    _sql(
        database_url,
        'UPDATE budget_spend SET spent_usd = 1.0 WHERE key_id = :key AND "window" = :window',
        key=me.key_id,
        window=today,
    )
    _assert_insufficient_quota(me.client.post("/v1/jobs", json=payload), f"window {today}")


def test_concurrent_submissions_never_overshoot_the_budget(
    tenant: Callable[..., Tenant],
) -> None:
    payload = body("Hello budget", model="mock-budgeted-idle", max_tokens=8)
    usd, _ = _worst(payload)
    fits = 5
    me = tenant(usd=usd * fits + usd / 2)

    def post(_: int) -> int:
        return me.client.post("/v1/jobs", json=payload).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(post, range(24)))

    assert codes.count(202) == fits, codes
    assert codes.count(429) == 24 - fits, codes
    assert _budget(me.client)["reserved"]["usd"] == pytest.approx(usd * fits)
    assert len(me.client.get("/v1/jobs").json()["data"]) == fits


def test_get_budget_of_a_key_without_one_is_all_null(client: httpx.Client) -> None:
    state = _budget(client)
    assert state["period"] is None
    assert state["window"] is None
    assert state["limits"] == {"usd": None, "tokens": None}


# --- batches -------------------------------------------------------------------------


def _batch(client: httpx.Client, lines: list[dict[str, Any]]) -> dict[str, Any]:
    file = upload(client, jsonl(lines))
    answer = client.post(
        "/v1/batches",
        json={
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert answer.status_code == 200, answer.text
    created: dict[str, Any] = answer.json()
    return created


def _lines(count: int, model: str = "mock-budgeted") -> list[dict[str, Any]]:
    return [
        request_line(f"r{i}", f"line {i}", model=model, max_tokens=8, mock={"tokens": 4})
        for i in range(count)
    ]


def _batch_worst(lines: list[dict[str, Any]]) -> float:
    route = ROUTE.model_copy(update={"max_output_tokens": 64})
    return sum(
        worst_case(line["body"], route=route, default_max_output=4096, batch=True).usd
        for line in lines
    )


def test_a_batch_over_budget_fails_with_insufficient_quota_and_runs_nothing(
    tenant: Callable[..., Tenant],
) -> None:
    lines = _lines(4)
    me = tenant(usd=_batch_worst(lines) * 0.75)
    batch = wait_for_batch(me.client, _batch(me.client, lines)["id"])
    assert batch["status"] == "failed"
    (error,) = batch["errors"]["data"]
    assert error["code"] == "insufficient_quota"
    assert "per day" in error["message"]
    assert me.client.get("/v1/jobs").json()["data"] == []
    assert _budget(me.client)["reserved"] == {"usd": 0.0, "tokens": 0}


def test_a_batch_within_budget_settles_to_the_sum_of_its_jobs_costs(
    tenant: Callable[..., Tenant], database_url: str
) -> None:
    lines = _lines(3)
    me = tenant(usd=_batch_worst(lines) * 2)
    batch = wait_for_batch(me.client, _batch(me.client, lines)["id"])
    assert batch["status"] == "completed", batch
    jobs = me.client.get("/v1/jobs", params={"batch_id": batch["id"]}).json()["data"]
    costs = [job_cost(PRICE, job["usage"], batch=True) or 0.0 for job in jobs]
    assert len(costs) == 3
    assert all(cost > 0 for cost in costs)
    state = _budget(me.client)
    assert state["reserved"] == {"usd": 0.0, "tokens": 0}
    assert state["spent"]["usd"] == pytest.approx(sum(costs))
    (stored,) = _sql(
        database_url, "SELECT sum(cost_usd) FROM jobs WHERE batch_id = :id", id=batch["id"]
    )
    assert stored[0] == pytest.approx(sum(costs))


def test_cancelling_a_batch_refunds_its_unrun_requests(tenant: Callable[..., Tenant]) -> None:
    lines = _lines(3, model="mock-budgeted-idle")
    me = tenant(usd=_batch_worst(lines) * 2)
    batch = wait_for_batch(me.client, _batch(me.client, lines)["id"], {"in_progress"})
    assert _budget(me.client)["reserved"]["usd"] == pytest.approx(_batch_worst(lines))
    me.client.post(f"/v1/batches/{batch['id']}/cancel").raise_for_status()
    wait_for_batch(me.client, batch["id"], {"cancelled"})
    state = _budget(me.client)
    assert state["reserved"] == {"usd": 0.0, "tokens": 0}
    assert state["spent"] == {"usd": 0.0, "tokens": 0}


def test_a_batch_of_a_key_whose_budget_is_used_up_is_refused_at_once(
    tenant: Callable[..., Tenant], database_url: str
) -> None:
    me = tenant(usd=1.0)
    _sql(
        database_url,
        _SPENT.replace(":reserved", "0.25"),
        key=me.key_id,
        window=window_of(Period.DAY, time.time()),
        usd=0.75,
    )
    file = upload(me.client, jsonl(_lines(1)))
    answer = me.client.post(
        "/v1/batches",
        json={
            "input_file_id": file["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    _assert_insufficient_quota(answer, "is used up")


# --- the store and the reconciler ----------------------------------------------------


async def _budgeted_key(database: Database, *, usd: float | None, tokens: int | None) -> str:
    async with database.session() as session:
        key_id = (await create_key(session, name="budget")).id
        await session.execute(
            update(ApiKey)
            .where(ApiKey.id == key_id)
            .values(budget_period="day", budget_usd=usd, budget_tokens=tokens)
        )
        await session.commit()
    return key_id


def _reservation(key_id: str, *, usd: float = 0.0, tokens: int = 0, limit: int = 0) -> Reservation:
    limits = BudgetLimits(period=Period.DAY, usd=None, tokens=limit)
    return Reservation(key_id, "2026-12-05", usd, tokens, limits)


def test_api_processes_at_once_never_take_more_than_the_budget(
    private_database_url: str,
) -> None:
    """Three processes' insert batches, each a transaction of many jobs, race for one
    budget with room for seven: exactly seven are stored, and the refused ones fail
    alone, not their batch."""

    async def main() -> None:
        databases = [Database(private_database_url) for _ in range(3)]
        try:
            key_id = await _budgeted_key(databases[0], usd=None, tokens=70)
            inserts = [JobInserts(database) for database in databases]
            reservation = _reservation(key_id, tokens=10, limit=70)
            jobs = [mock_job(key_id, reservation=reservation) for _ in range(30)]
            outcomes = await asyncio.gather(
                *(inserts[i % 3].insert(job) for i, job in enumerate(jobs)),
                return_exceptions=True,
            )
            stored = [o for o in outcomes if isinstance(o, Job)]
            refused = [o for o in outcomes if isinstance(o, OverBudget)]
            assert (len(stored), len(refused)) == (7, 23), outcomes
            assert sum(i.transactions for i in inserts) < 30  # they did share transactions
            async with databases[0].session() as session:
                held = await standing(session, key_id=key_id, window="2026-12-05")
            assert held.reserved_tokens == 70
        finally:
            for database in databases:
                await database.aclose()

    asyncio.run(main())


def test_settlement_happens_once_and_the_sweep_settles_what_an_end_left_behind(
    private_database_url: str,
) -> None:
    """One job ends through its outcome's transaction (settled there), one is cancelled
    and one expires (refunded there), and one is ended by a path that does not settle:
    the reconciler's sweep books it at its usage's price, once."""
    routing = RoutingConfig.model_validate(
        {"providers": {"mock": {"type": "mock"}}, "routes": {"mock": ROUTE.model_dump()}}
    )

    async def main() -> None:
        database = Database(private_database_url)
        try:
            key_id = await _budgeted_key(database, usd=100.0, tokens=None)
            limits = BudgetLimits(period=Period.DAY, usd=100.0, tokens=None)
            reservation = Reservation(key_id, "2026-12-05", 1.0, 500, limits)
            inserts = JobInserts(database)
            finished, cancelled, swept = [
                await inserts.insert(mock_job(key_id, reservation=reservation)) for _ in range(3)
            ]
            late = mock_job(key_id, reservation=reservation, expires_at=time.time() - 1)
            expiring = await inserts.insert(late)
            usage = {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150}
            async with database.session() as session:
                claims = await claim_jobs(
                    session, job_ids=[finished.id], now=time.time(), lease_seconds=60
                )
                outcome = Outcome(
                    status=JobStatus.SUCCEEDED, response={}, usage=usage, cost_usd=0.2
                )
                finish = Finish(claim=claims[finished.id], outcome=outcome, attempt=None)
                (written,) = await finish_jobs(session, finishes=[finish], now=time.time())
                assert written
            async with database.session() as session:
                assert await cancel_job(
                    session, job_id=cancelled.id, key_id=key_id, now=time.time()
                )
            async with database.session() as session:
                (expired,) = await expire_due(session, now=time.time(), limit=10)
                assert expired.job_id == expiring.id
            async with database.session() as session:
                await session.execute(
                    update(Job)
                    .where(Job.id == swept.id)
                    .values(status="succeeded", usage=usage, finished_at=time.time())
                )
                await session.commit()
                held = await standing(session, key_id=key_id, window="2026-12-05")
            # Cancelled and expired: refunded; the swept job's is still held.
            assert held.reserved_usd == pytest.approx(1.0)
            assert held.reserved_tokens == 500
            assert held.spent_usd == pytest.approx(0.2)

            enqueuer = Enqueuer(settings=Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0"))
            reconciler = Reconciler(
                database=database,
                enqueuer=enqueuer,
                grace_seconds=3600,
                republish_after_seconds=3600,
                routing=lambda: routing,
            )
            assert await reconciler.settle_budgets() == 1
            assert await reconciler.settle_budgets() == 0  # once
            swept_cost = job_cost(PRICE, usage, batch=False)
            assert swept_cost is not None
            async with database.session() as session:
                held = await standing(session, key_id=key_id, window="2026-12-05")
                row = await session.get(Job, swept.id)
            assert held.reserved_usd == pytest.approx(0.0)
            assert held.reserved_tokens == 0
            assert held.spent_usd == pytest.approx(0.2 + swept_cost)
            assert held.spent_tokens == 300
            assert row is not None
            assert row.budget_window is None
            assert row.cost_usd == pytest.approx(swept_cost)
        finally:
            await database.aclose()

    asyncio.run(main())
