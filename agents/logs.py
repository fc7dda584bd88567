"""Agent log lines carry node, pool, job and task ids, so logs from every node can be joined.

Why a filter and not a format string alone: the job id travels in the task message headers;
the filter reads it from the current task at the moment a line is written.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s node=%(node_id)s pool=%(pool)s job=%(job_id)s task=%(task_id)s %(name)s: %(message)s"


class IdsFilter(logging.Filter):
    def __init__(self, node_id: str, pool: str) -> None:
        super().__init__()
        self.node_id = node_id
        self.pool = pool

    def filter(self, record: logging.LogRecord) -> bool:
        from celery import current_task

        record.node_id = self.node_id
        record.pool = self.pool
        request = getattr(current_task, "request", None) if current_task else None
        record.task_id = getattr(request, "id", None) or "-"
        headers = getattr(request, "headers", None) or {}
        record.job_id = getattr(request, "rm_job_id", None) or headers.get("rm_job_id") or "-"
        return True


def install(logger: logging.Logger, node_id: str, pool: str) -> None:
    ids = IdsFilter(node_id, pool)
    for handler in logger.handlers:
        handler.addFilter(ids)
        handler.setFormatter(logging.Formatter(FORMAT))
