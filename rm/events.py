"""Scaling and job events: one row and one log line per decision, refusal or failure.

Why one function: "explain every decision" means the API, the dashboard and the logs must show
the same sentence with the same cause; writing both here keeps them from drifting.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import Any

from sqlalchemy.orm import Session

from rm.metrics import count_event
from rm.models import ScalingEvent

log = logging.getLogger("rm.events")


class EventKind(StrEnum):
    LAUNCH = "launch"
    LAUNCH_FAILED = "launch-failed"
    REGISTERED = "registered"
    DRAIN = "drain"
    TERMINATE = "terminate"
    TERMINATED = "terminated"
    REFUSED = "refused"
    LOST = "lost"
    BOOT_TIMEOUT = "boot-timeout"
    JOB_SUBMITTED = "job-submitted"
    JOB_FINISHED = "job-finished"
    TASK_RETRY = "task-retry"
    TASK_RERUN = "task-rerun"
    ENROLLED = "enrolled"
    ENROL_REFUSED = "enrol-refused"
    ORPHAN = "orphan"
    BUDGET_ALERT = "budget-alert"
    WINDOW = "window"
    POLICY = "policy"
    LEADER = "leader"  # causes: leader_elected, leader_lost


def record_event(
    session: Session,
    kind: EventKind,
    cause: str,
    message: str,
    *,
    now: float,
    pool: str | None = None,
    node_id: str | None = None,
    job_id: str | None = None,
    task_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> ScalingEvent:
    event = ScalingEvent(
        at=now, kind=str(kind), cause=str(cause), message=message, pool=pool,
        node_id=node_id, job_id=job_id, task_id=task_id, data=data or {},
    )
    session.add(event)
    count_event(str(kind), str(cause), pool)
    level = logging.WARNING if kind in (EventKind.LAUNCH_FAILED, EventKind.LOST, EventKind.BOOT_TIMEOUT,
                                                 EventKind.ENROL_REFUSED, EventKind.ORPHAN,
                                                 EventKind.LEADER) else logging.INFO
    log.log(level, "[%s/%s] %s", kind, cause, message,
            extra={"pool": pool, "node_id": node_id, "job_id": job_id, "task_id": task_id})
    return event
