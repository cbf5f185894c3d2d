"""The shapes callers send and get: OpenAI's chat completions
(:mod:`~relayq.schemas.chat`), relayq's jobs, batches, files and webhooks, and
the small value types they share (spans like ``24h``, JSON values, parameter
paths, webhook destinations, the scopes a key holds).

Schemas are pydantic models and pure functions. They import nothing of the
store, Redis or the providers, so the store and every process can use them;
turning a stored row into one of these shapes is the store's job
(:mod:`relayq.store.views`).
"""
