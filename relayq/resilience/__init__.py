"""Keeping jobs moving when providers misbehave: the pure policy of what a
job does next (:mod:`~relayq.resilience.policy`), the circuit breaker shared by
every worker (:mod:`~relayq.resilience.breaker`), global per-deployment rate
limits and cooldowns (:mod:`~relayq.resilience.ratelimit`), per-key limits on
requests, tokens and jobs running (:mod:`~relayq.resilience.key_limits`), a
worker's cached clearance to call a deployment
(:mod:`~relayq.resilience.clearance`), and
:class:`~relayq.resilience.resilience.Resilience`, which applies them around a
provider call and carries out retries and fallback.
"""
