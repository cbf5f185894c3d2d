"""A job's events: an ordered log per job in a Redis Stream, written by workers
(:mod:`~relayq.events.log`); :class:`~relayq.events.hub.EventHub`, which follows
them for every SSE client of an API process at once; and cancel signals to the
worker running a job (:mod:`~relayq.events.cancellation`).
"""
