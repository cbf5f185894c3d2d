"""What operators see: JSON logs (:mod:`~relayq.observability.logs`), Prometheus
metrics (:mod:`~relayq.observability.metrics`) fed by lock-free worker tallies
(:mod:`~relayq.observability.tally`), OpenTelemetry traces when enabled
(:mod:`~relayq.observability.tracing`), and what each worker consumes, for
readiness probes (:mod:`~relayq.observability.consumers`).
"""
