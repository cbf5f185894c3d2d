"""Direct jobs: a sync call (``/v1/chat/completions`` without a job id) whose
caller waits for the answer. The request goes to a worker's loop on a Redis
stream (:mod:`~relayq.direct.lane`), the answer comes straight back to the API
process that waits (:mod:`~relayq.direct.replies`), and the job's row is stored
once the caller has its answer (:mod:`~relayq.direct.pending_rows`).
"""
