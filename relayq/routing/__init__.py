"""Which deployment serves a job: :class:`~relayq.routing.router.Router` picks one
of a model's deployments by its strategy, reading what every process shares in
Redis (:mod:`~relayq.routing.state`); :mod:`~relayq.routing.live` follows the
routing file as it changes; :mod:`~relayq.routing.drains` follows the deployments
an operator drained (no new jobs); :mod:`~relayq.routing.catalog` lists the models
the providers publish.
"""
