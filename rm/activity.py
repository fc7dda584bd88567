"""What the workers are doing, folded from their Celery events (pure; no I/O).

Why from events: queue length does not show prefetched or running tasks, and only the workers
know which node holds which task. Heartbeats tell which nodes are alive; task events tell
which node runs what. Missed events (the manager was down) are repaired elsewhere: the job
service reconciles against the result backend and calls :meth:`ActivityTracker.forget`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TERMINAL_TASK_EVENTS = {"task-succeeded", "task-failed", "task-rejected", "task-revoked", "task-retried"}
STALE_AFTER_HEARTBEAT_S = 3.0


@dataclass
class WorkerActivity:
    name: str
    first_seen: float
    last_seen: float
    online: bool = True
    heartbeat_active: int = 0
    tasks: dict[str, tuple[str, float]] = field(default_factory=dict)  # task id -> (received|started, at)

    @property
    def running(self) -> int:
        """Tasks held by the worker: reserved or running (the larger of events and heartbeat)."""
        return max(len(self.tasks), self.heartbeat_active)


@dataclass(frozen=True)
class TaskUpdate:
    """One task event, reduced to what the job service needs."""

    task_id: str
    kind: str  # the Celery event type without the "task-" prefix
    worker: str | None
    at: float
    detail: str | None = None


class ActivityTracker:
    def __init__(self) -> None:
        self.workers: dict[str, WorkerActivity] = {}
        self.queue_of: dict[str, str] = {}  # task id -> queue it was published to

    def _worker(self, name: str, now: float) -> WorkerActivity:
        worker = self.workers.get(name)
        if worker is None:
            worker = self.workers[name] = WorkerActivity(name=name, first_seen=now, last_seen=now)
        worker.last_seen = now
        worker.online = True
        return worker

    def apply(self, event: Mapping[str, Any], now: float) -> TaskUpdate | None:
        kind = event.get("type", "")
        if kind.startswith("worker-"):
            self._apply_worker_event(kind, event, now)
            return None
        if not kind.startswith("task-"):
            return None
        task_id = event.get("uuid")
        if not task_id:
            return None
        if kind == "task-sent":
            self.queue_of[task_id] = event.get("queue") or event.get("routing_key") or ""
            return None
        hostname = event.get("hostname")
        worker = self._worker(hostname, now) if hostname else None
        if worker is not None:
            if kind == "task-received":
                worker.tasks[task_id] = ("received", now)
            elif kind == "task-started":
                worker.tasks[task_id] = ("started", now)
            elif kind in TERMINAL_TASK_EVENTS:
                worker.tasks.pop(task_id, None)
        detail = event.get("exception") or event.get("reason")
        return TaskUpdate(task_id=task_id, kind=kind[len("task-"):], worker=hostname, at=now, detail=detail)

    def _apply_worker_event(self, kind: str, event: Mapping[str, Any], now: float) -> None:
        name = event.get("hostname")
        if not name:
            return
        worker = self._worker(name, now)
        if kind == "worker-offline":
            worker.online = False
            worker.tasks.clear()
            worker.heartbeat_active = 0
            return
        if kind == "worker-heartbeat":
            worker.heartbeat_active = int(event.get("active", 0) or 0)
            if worker.heartbeat_active == 0:
                self._drop_stale_started(worker, now)

    @staticmethod
    def _drop_stale_started(worker: WorkerActivity, now: float) -> None:
        """A heartbeat saying nothing runs overrides a 'started' whose end event was missed."""
        for task_id, (state, at) in list(worker.tasks.items()):
            if state == "started" and now - at > STALE_AFTER_HEARTBEAT_S:
                del worker.tasks[task_id]

    def forget(self, task_id: str) -> None:
        """The task is over (learned from the result backend): drop it everywhere."""
        self.queue_of.pop(task_id, None)
        for worker in self.workers.values():
            worker.tasks.pop(task_id, None)

    def forget_worker(self, name: str) -> None:
        self.workers.pop(name, None)

    def alive(self, name: str, now: float, timeout_s: float) -> bool:
        worker = self.workers.get(name)
        return worker is not None and worker.online and now - worker.last_seen <= timeout_s

    def in_flight_by_queue(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for worker in self.workers.values():
            if not worker.online:
                continue
            for task_id in worker.tasks:
                queue = self.queue_of.get(task_id, "")
                counts[queue] = counts.get(queue, 0) + 1
        return counts
