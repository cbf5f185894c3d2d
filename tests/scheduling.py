"""How pytest-xdist hands tests to its processes: one at a time, but a shared stack's
tests together.

A module-scoped stack is started once per xdist process that runs one of its
tests: spread over six processes, ``test_resilience.py``'s stack was started
five times, about 35 s of CPU on two cores. :data:`SHARED_STACKS` names the
tests that share such a stack; each group goes to one process whole, and
every other test is a unit of its own, handed to the first process with
room. (xdist's own ``--dist loadgroup`` reads ``xdist_group`` marks through
a node id suffix that pytest 9.2 no longer lets a plugin set.)
"""

from __future__ import annotations

from xdist.scheduler import LoadScopeScheduling

__all__ = ["SHARED_STACKS", "SharedStackScheduling", "group_of"]

SHARED_STACKS: dict[str, tuple[str, ...]] = {
    "resilience": ("tests/test_resilience.py",),
    "adapters-pipeline": ("tests/test_adapters_pipeline.py",),
    "strict-api": (
        "tests/test_webhooks.py::test_private_destinations_are_refused_when_not_allowed",
        "tests/test_webhooks.py::test_a_webhook_in_the_job_body_is_checked_stored_and_used",
    ),
}
"""Group name → the modules or test functions (without parameters) that share a stack."""

_GROUP_OF = {member: name for name, members in SHARED_STACKS.items() for member in members}


def group_of(nodeid: str) -> str | None:
    """The :data:`SHARED_STACKS` group ``nodeid`` belongs to, if any."""
    function = nodeid.split("[", 1)[0]
    return _GROUP_OF.get(function) or _GROUP_OF.get(function.split("::", 1)[0])


class SharedStackScheduling(LoadScopeScheduling):  # type: ignore[misc]  # xdist: untyped
    """xdist's load-by-scope scheduling, where a scope is a group or a single test."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid) or nodeid
