"""Every Redis key is named in relayq/redis/keys.py, and no two names collide."""

from __future__ import annotations

import ast
import inspect
import itertools
from collections.abc import Iterator

import relayq.redis.keys
from relayq.redis.keys import (
    CELERY_UNACKED,
    CELERY_UNACKED_INDEX,
    PRIORITY_STEPS,
    RedisKeys,
    priority_lists,
)
from tests.stack import ROOT

_KEYS_MODULE = ROOT / "relayq" / "redis" / "keys.py"
_SOURCES = ("relayq", "api", "worker")


def _prefix_name(node: ast.expr) -> str | None:
    """The name of a variable or attribute that holds a key prefix (``key_prefix``,
    ``self._prefix``, ``settings.key_prefix``), else None. Upper-case names are
    constants (``KEY_PREFIX`` is an API key's ``rq-``), not Redis prefixes."""
    name = node.id if isinstance(node, ast.Name) else getattr(node, "attr", None)
    if isinstance(name, str) and name.endswith("prefix") and not name.isupper():
        return name
    return None


def _key_building(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """Each place that makes a key of a prefix: ``f"{prefix}:…"``, ``f"{prefix}name:…"``
    or ``prefix + …``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = node.values
            for part, after in itertools.zip_longest(parts, parts[1:]):
                if not isinstance(part, ast.FormattedValue):
                    continue
                name = _prefix_name(part.value)
                followed = isinstance(after, ast.Constant) and ":" in str(after.value)
                if name is not None and (followed or name == "key_prefix"):
                    yield node.lineno, ast.unparse(node)
        elif (
            isinstance(node, ast.BinOp)
            and isinstance(node.op, ast.Add)
            and _prefix_name(node.left) is not None
        ):
            yield node.lineno, ast.unparse(node)


def test_only_the_keys_module_builds_keys_from_the_prefix() -> None:
    found = [
        f"{path.relative_to(ROOT)}:{line}: {code}"
        for source in _SOURCES
        for path in sorted((ROOT / source).rglob("*.py"))
        if path != _KEYS_MODULE
        for line, code in _key_building(ast.parse(path.read_text(), str(path)))
    ]
    assert found == []


def test_the_scan_finds_keys_built_elsewhere() -> None:
    built = """
a = f"{key_prefix}:events:{job_id}"
b = f"{self._prefix}:taken:{instance}"
c = self._prefix + deployment
d = f"{settings.key_prefix}:reconciler"
e = f"{self._prefix}cooldown:{provider}"
fine = f"{prefix}_{groups}"
also_fine = KEY_PREFIX + token
"""
    assert [line for line, _ in _key_building(ast.parse(built))] == [2, 3, 4, 5, 6]


def _every_key(keys: RedisKeys) -> dict[str, str]:
    """Every key and channel ``keys`` names, by how it was asked for, with several
    inputs per key: real-looking ids, deployments and queues."""
    samples = ["job_01HX", "job_02HX", "openai|gpt-4o", "mock|mock", "llm.mock", "a1b2"]
    named: dict[str, str] = {}
    for name, member in inspect.getmembers(RedisKeys):
        if name.startswith("_") or name == "prefix":
            continue
        if isinstance(member, property):
            named[name] = getattr(keys, name)
            continue
        method = getattr(keys, name)
        arity = len(inspect.signature(method).parameters)
        for args in itertools.product(samples, repeat=arity):
            named[f"{name}{args}"] = method(*args)
    return named


def test_every_key_is_distinct_and_under_the_prefix() -> None:
    keys = _every_key(RedisKeys("relayq"))
    assert len(keys) > 30
    by_value: dict[str, list[str]] = {}
    for asked, key in keys.items():
        by_value.setdefault(key, []).append(asked)
    assert {k: v for k, v in by_value.items() if len(v) > 1} == {}
    assert all(key.startswith("relayq:") for key in keys.values())
    others = set(_every_key(RedisKeys("relayq2")).values())
    assert others.isdisjoint(keys.values())


def test_celery_keys_are_apart_from_relayqs() -> None:
    celery = {CELERY_UNACKED, CELERY_UNACKED_INDEX}
    for queue in ("llm.mock", "llm.openai", "webhooks", "batches"):
        lists = priority_lists(queue)
        assert len(set(lists)) == len(PRIORITY_STEPS)
        assert lists[0] == queue
        celery.update(lists)
    assert len(celery) == 2 + 4 * len(PRIORITY_STEPS)
    assert celery.isdisjoint(_every_key(RedisKeys("relayq")).values())


def test_keys_as_they_were() -> None:
    """The names themselves: a rename would strand what a running deployment holds."""
    keys = RedisKeys("p")
    assert [
        keys.events("j"),
        keys.firehose,
        keys.cancel_channel,
        keys.admission_channel,
        keys.lane("q"),
        keys.lane_pattern,
        keys.replies("r"),
        keys.direct_fence("j"),
        keys.direct_cancelled("j"),
        keys.rate_rpm("d"),
        keys.rate_tpm("d"),
        keys.cooldown("v"),
        keys.breaker("d"),
        keys.key_rpm("k"),
        keys.key_tpm("k", "7"),
        keys.key_tpm_reserved,
        keys.key_running,
        keys.key_members,
        keys.routing_in_flight,
        keys.routing_latency,
        keys.routing_drained,
        keys.drains_channel,
        keys.cache("k", "h"),
        keys.workers,
        keys.alive("i"),
        keys.consumers,
        keys.taken("i"),
        keys.handing_back("i"),
        keys.reconciler_lock,
        keys.batch_scheduler_lock,
        keys.batch_activity,
    ] == [
        "p:events:j",
        "p:event-firehose",
        "p:cancel",
        "p:admission",
        "p:lane:q",
        "p:lane:*",
        "p:replies:r",
        "p:direct:j",
        "p:direct-cancelled:j",
        "p:ratelimit:d:rpm",
        "p:ratelimit:d:tpm",
        "p:ratelimit:cooldown:v",
        "p:breaker:d",
        "p:key_limits:rpm:k",
        "p:key_limits:tpm:k:7",
        "p:key_limits:tpm_reserved",
        "p:key_limits:running",
        "p:key_limits:members",
        "p:routing:in_flight",
        "p:routing:latency_ms",
        "p:routing:drained",
        "p:routing:drains",
        "p:cache:k:h",
        "p:workers",
        "p:alive:i",
        "p:consumers",
        "p:taken:i",
        "p:handing-back:i",
        "p:reconciler",
        "p:batch-scheduler",
        "p:batches:activity",
    ]
    assert priority_lists("q") == ["q", *(f"q:{step}" for step in range(1, 10))]
    assert (CELERY_UNACKED, CELERY_UNACKED_INDEX) == ("unacked", "unacked_index")


def test_every_key_has_its_docstring() -> None:
    undocumented = [
        name
        for name, member in inspect.getmembers(RedisKeys)
        if not name.startswith("_") and name != "prefix" and not inspect.getdoc(member)
    ]
    assert undocumented == []


def test_public_surface() -> None:
    assert sorted(relayq.redis.keys.__all__) == [
        "CELERY_UNACKED",
        "CELERY_UNACKED_INDEX",
        "PRIORITY_STEPS",
        "RedisKeys",
        "priority_lists",
    ]
