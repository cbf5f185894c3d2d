"""JSON logs, one object a line, for every relayq process."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

import orjson

__all__ = ["JsonFormatter", "configure_logging", "log_fields", "logged_with"]

_fields: ContextVar[Mapping[str, object]] = ContextVar(
    "relayq_log_fields", default=MappingProxyType({})
)
"""Fields every line logged in this context carries (a request's id, a job's)."""


def log_fields() -> Mapping[str, object]:
    """The fields this context's lines carry (see :func:`logged_with`)."""
    return _fields.get()


@contextmanager
def logged_with(**fields: object) -> Iterator[None]:
    """Every line logged in the block (and in tasks it starts) carries ``fields``.

    A request's middleware binds its request id; a worker binds it again for
    the job that request made, so one id finds every line about that job.
    """
    token = _fields.set({**_fields.get(), **fields})
    try:
        yield
    finally:
        _fields.reset(token)


# Fields every record has, and uvicorn's ANSI-coloured duplicate of its message.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"color_message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON with its extra fields kept.

    With orjson, and the timestamp's seconds formatted once a second: a line
    costs about half what ``json.dumps`` did (there are two a job: the API's
    access line and the worker's outcome line).
    """

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._stamp = ""

    def format(self, record: logging.LogRecord) -> str:
        second = int(record.created)
        if second != self._second:  # a race between threads only formats it twice
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        entry: dict[str, object] = {
            "ts": f"{self._stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_fields.get())
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(entry, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:  # an integer past 64 bits, say
            return json.dumps(entry, default=str)


# uvicorn.access is left alone: `--no-access-log` silences it by removing its handlers.
_SERVER_LOGGERS = ("uvicorn", "uvicorn.error", "celery", "flower")

# Celery's line per message received and per message traced: they describe a
# message, not a job (an envelope carries many, and a failed job's task is
# traced as a success), and cost a JSON line each; httpx's line per upstream
# request ("HTTP Request: POST … 200 OK") says less than the job's own line and
# took about 6 % of a worker's CPU (profiled at 500 jobs in flight). relayq.jobs
# logs one line per job that ended instead. At DEBUG they are kept.
_PER_MESSAGE_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "httpx")


def configure_logging(level: str) -> None:
    """Send every logger's records, the servers' included, to stderr as JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.captureWarnings(True)  # Python's warnings (Celery's, say) as lines too
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers[:] = []
        server_logger.propagate = True
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        for name in _PER_MESSAGE_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
