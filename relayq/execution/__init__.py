"""Running jobs (the worker side): :class:`~relayq.execution.executor.Executor`
claims a job, calls its provider, streams its deltas to its event log, and
records the attempt and the outcome; :mod:`~relayq.execution.ledger` writes
the claims and outcomes of a whole loop tick together; the response cache
answers a repeated request without a provider call.
"""
