"""The Celery side of the pipeline that both processes share: queue names, task
names, message headers and the publisher (:mod:`~relayq.queueing.broker`), and
the outbox (:mod:`~relayq.queueing.outbox`), the one place that publishes a
message and then records that the broker took it.
"""
