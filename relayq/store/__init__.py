"""SQL persistence, the source of truth for keys, jobs, batches, files and webhooks: one
repository module per noun, each change a guarded conditional statement — ``database``
(engines and sessions), ``models`` (the ORM tables), ``migrate`` and ``migrations``
(Alembic), ``keys`` (API keys), ``audit`` (admin actions), ``jobs`` (job rows: create,
read, list, cancel), ``claims`` (a worker's hold on a running job: claim, renew,
release), ``outcomes`` (a run's end, written under its claim), ``attempts`` (provider
calls made), ``retries`` (requeue, fall back, expire), ``stranded`` (jobs with no
message or no worker, handed back), ``counts`` (unfinished jobs per deployment and per
key), ``batches`` (batch rows), ``files`` (file rows), ``endpoints`` (webhook endpoints
and signing secrets), ``deliveries`` (webhook deliveries and their attempts),
``planning`` (the deliveries an outcome plans, in its transaction), ``unsent``
(deliveries that need a message), ``retention`` (rows past their period purged, a
bounded chunk per table) and ``views`` (rows as the objects callers get).
"""

from relayq.store.database import Database, async_url, sync_url

__all__ = ["Database", "async_url", "sync_url"]
