"""Signed webhooks for job outcomes, per Standard Webhooks (standardwebhooks.com).

A job's terminal outcome plans its deliveries in the same transaction that
writes the outcome (an outbox); workers send them from the ``webhooks``
queue, sign each attempt, and retry with backoff by republishing with a
countdown. See docs/webhooks.md.

Modules: :mod:`~relayq.schemas.webhooks` (what callers send and get),
:mod:`~relayq.webhooks.signing`, :mod:`~relayq.schemas.destinations` (which
addresses may be called), :mod:`~relayq.store.planning`,
:mod:`~relayq.webhooks.backoff`, :mod:`~relayq.webhooks.transport`,
:mod:`~relayq.webhooks.delivery` and :mod:`~relayq.webhooks.publishing`.
This package module imports none of them, so :mod:`relayq.schemas.jobs` and the
store can import the pieces they need without cycles.
"""
