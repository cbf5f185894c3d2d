"""Accepting jobs (the API side of the pipeline): resolve the model's route,
check the key's limits, write the job's row (many requests' rows in one
transaction, :mod:`~relayq.intake.inserts`), then publish its message through the
outbox. :class:`~relayq.intake.intake.Intake` is the one entry point; the routes
of ``api/`` call it and map its errors to HTTP answers.
"""
