"""The ``relayq`` command line: the processes (``api``, ``worker``, ``flower``), the
dev stack on embedded defaults (:mod:`~relayq.cli.dev`), keys and the database,
``config check`` (:mod:`~relayq.cli.config_check`), health probes, and
``relayq batch``, a client of the HTTP API (:mod:`~relayq.cli.batch`).

Commands import what they need when they run, so ``relayq --help`` loads
neither the store nor Celery.
"""
