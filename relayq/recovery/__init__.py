"""Nothing is lost: a supervisor hands back the jobs of a worker process it lost,
within seconds (:mod:`~relayq.recovery.handback`), and the reconciler re-sends
what SQL says should be queued but the broker never took
(:mod:`~relayq.recovery.reconciler`).
"""
