"""Redis as relayq uses it: every key it writes, named in one place
(:mod:`~relayq.redis.keys`); clients for processes with many concurrent users
(:mod:`~relayq.redis.pool`); the commands of many callers sent as one pipeline
(:mod:`~relayq.redis.pipeline`); pub/sub listening (:mod:`~relayq.redis.channels`);
and a lock that lets one process at a time run a periodic step
(:mod:`~relayq.redis.locking`).
"""
