"""Manager logging: every line carries job, task, node and pool ids (``-`` when not relevant).

Why: the platform we replace had logs scattered across nodes with no business identifiers.
Pass ids as ``extra={"job_id": ..., "node_id": ...}``; the JSON option emits one object a line
for log shippers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from urllib.parse import unquote_plus

ID_FIELDS = ("job_id", "task_id", "node_id", "pool")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s job=%(job_id)s task=%(task_id)s node=%(node_id)s pool=%(pool)s: %(message)s"


class IdDefaults(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name in ID_FIELDS:
            if not getattr(record, name, None):
                setattr(record, name, "-")
        return True


QUERY_PAIR = re.compile(r"((?:^|[?&;])([^=&;?\s\"']+)=)([^&;\s\"']*)")
ACCESS_LOGGERS = ("uvicorn.access",)


def mask_tokens(text: str) -> str:
    """``/?token=abc&x=1`` -> ``/?token=***&x=1``: a dashboard link's token must not reach a log,
    however its name is spelled (``TOKEN=``, ``tok%65n=``: the server decodes both)."""
    return QUERY_PAIR.sub(lambda m: f"{m.group(1)}***" if unquote_plus(m.group(2)).lower() == "token" else m.group(0),
                          text)


class MaskTokens(logging.Filter):
    """Mask ``token=`` query values in a record's message and its string arguments (uvicorn's
    access log passes the request path as an argument)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = mask_tokens(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(mask_tokens(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_token_masking() -> None:
    """Put :class:`MaskTokens` on the access loggers (once): whoever turns the access log on later
    still never writes a token."""
    for name in ACCESS_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, MaskTokens) for f in logger.filters):
            logger.addFilter(MaskTokens())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **{name: getattr(record, name, "-") for name in ID_FIELDS},
        }
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data)


def setup_logging(level: str = "INFO", json_logs: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(IdDefaults())
    handler.addFilter(MaskTokens())
    handler.setFormatter(JsonFormatter() if json_logs else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    install_token_masking()
    for noisy in ("uvicorn.access", "httpx", "celery.events", "kombu"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
