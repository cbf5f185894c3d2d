"""JSON logs, one object a line, for every relayq process."""

from __future__ import annotations

import json
import logging
import time

__all__ = ["JsonFormatter", "configure_logging"]

# Fields every record has, and uvicorn's ANSI-coloured duplicate of its message.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"color_message"}


class JsonFormatter(logging.Formatter):
    """Formats a record as JSON with its extra fields kept."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
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
    for name in _SERVER_LOGGERS:
        server_logger = logging.getLogger(name)
        server_logger.handlers[:] = []
        server_logger.propagate = True
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        for name in _PER_MESSAGE_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)
