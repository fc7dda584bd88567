"""The job service: workflows in, Celery messages out, outcomes recorded exactly once.

Why the manager walks the DAG itself instead of using Celery canvas: it must know every task's
state to count demand, to explain progress and to survive its own restart; a task is published
only when the tasks it comes ``after`` have all succeeded.

Delivery rules:
- publish, then commit: a crash in between re-publishes the same Celery id on restart (at least
  once), and agents skip a redelivered id whose success is already stored;
- a retry after a failure is a deliberate new attempt with a new Celery id (``<task>-<n>``);
- the outcome is read from the result backend (durable), not from events (pub/sub, lossy), and is
  recorded only if the task is not already finished: ``completions`` ends at exactly 1.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Collection, Iterable
from enum import StrEnum
from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from agents.settings import node_id_of
from rm.activity import ActivityTracker, TaskUpdate
from rm.demand import queue_for
from rm.events import EventKind, record_event
from rm.models import Job, Task
from rm.store import Store
from rm.workflow import expand, validate_workflow

log = logging.getLogger("rm.jobs")

FULL_RECONCILE_EVERY = 10  # ticks between sweeps of every unfinished task against the backend
MGET_CHUNK = 1000  # result keys read per round trip


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskState(StrEnum):
    PENDING = "pending"  # waiting for the tasks it comes after
    QUEUED = "queued"  # published to the broker
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_TASK = (TaskState.SUCCEEDED, TaskState.FAILED, TaskState.CANCELLED)
NOT_SUCCEEDED = tuple(state for state in TaskState if state != TaskState.SUCCEEDED)
IN_BROKER = (TaskState.QUEUED, TaskState.RUNNING)
FINISHED_JOB = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobService:
    def __init__(
        self, store: Store, app: Celery, cluster: str, *,
        registered: Collection[str], pool_label_sets: Collection[frozenset[str]], tracker: ActivityTracker,
        allow_shell: bool = False, leading: Callable[[], bool] = lambda: True,
        guard: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.app = app
        self.cluster = cluster
        self.registered = registered
        self.allow_shell = allow_shell
        self.pool_label_sets = pool_label_sets
        self.tracker = tracker
        self.leading = leading  # a standby stores a submitted job; the leader's next tick publishes it
        self.guard = guard or (lambda action: None)  # raises (rm.leader.StaleLeader) to refuse a publish
        self._lock = threading.RLock()  # the API thread submits while the controller dispatches
        self._check_now: set[str] = set()
        self._ticks = 0

    # -- submission ------------------------------------------------------------------------
    def submit(self, body: Any, owner: str, now: float) -> str:
        """Validate (raises rm.workflow.WorkflowError), store, and publish the first tasks."""
        spec = validate_workflow(body, registered=self.registered, pool_label_sets=self.pool_label_sets,
                                 allow_shell=self.allow_shell)
        job_id = uuid.uuid4().hex
        with self._lock, self.store.session() as session:
            session.add(Job(id=job_id, name=spec.name, owner=owner, state=JobState.QUEUED,
                            spec=spec.model_dump(mode="json"), created_at=now))
            session.flush()
            for seq, planned in enumerate(expand(spec)):
                session.add(Task(
                    seq=seq, id=f"{job_id}.{planned.name}.{planned.index}", job_id=job_id, name=planned.name,
                    index=planned.index, run=planned.run, args=dict(planned.args), after=list(planned.after),
                    labels=sorted(planned.labels), queue=queue_for(self.cluster, planned.labels),
                    state=TaskState.PENDING, max_retries=planned.max_retries, timeout_s=planned.timeout_s,
                ))
            record_event(session, EventKind.JOB_SUBMITTED, "user",
                         f"job {spec.name} ({job_id}) submitted by {owner or 'anonymous'} with "
                         f"{sum(t.replicate for t in spec.tasks)} task(s)", now=now, job_id=job_id)
        if self.leading():
            try:
                self.dispatch_ready(now, job_ids=[job_id])
            except Exception:  # noqa: BLE001 - the job is stored: the leader's next tick publishes it
                log.warning("job %s stored; publishing it now failed, the next tick publishes it", job_id,
                            exc_info=True, extra={"job_id": job_id})
        return job_id

    # -- dispatch --------------------------------------------------------------------------
    def dispatch_ready(self, now: float, job_ids: Iterable[str] | None = None) -> int:
        """Publish every pending task whose dependencies have all succeeded."""
        published = 0
        with self._lock, self.store.session() as session:
            query = (select(Task.job_id).join(Job, Job.id == Task.job_id).distinct()
                     .where(Task.state == TaskState.PENDING, Job.state.in_([JobState.QUEUED, JobState.RUNNING])))
            if job_ids is not None:
                query = query.where(Task.job_id.in_(list(job_ids)))
            for job_id in list(session.scalars(query)):
                published += self._dispatch_job(session, job_id, now)
        return published

    def _dispatch_job(self, session: Session, job_id: str, now: float) -> int:
        blocking = set(session.scalars(select(Task.name).distinct().where(
            Task.job_id == job_id, Task.state.in_(list(NOT_SUCCEEDED)))))
        pending = session.scalars(select(Task).where(Task.job_id == job_id, Task.state == TaskState.PENDING)
                                  .order_by(Task.seq))
        ready = [t for t in pending if not set(t.after) & blocking]
        if ready:
            self.guard(f"publish {len(ready)} task(s) of job {job_id}")
            with self.app.producer_or_acquire() as producer:  # one connection for the whole batch
                for task in ready:
                    self._publish(task, now, producer)
        return len(ready)

    def _publish(self, task: Task, now: float, producer: Any = None) -> None:
        task.publishes += 1
        task.celery_id = f"{task.id}-{task.publishes}"
        options: dict[str, Any] = {}
        if task.timeout_s:
            options["time_limit"] = task.timeout_s
        self.app.send_task(task.run, kwargs=task.args, task_id=task.celery_id, queue=task.queue,
                           headers={"rm_job_id": task.job_id}, producer=producer, **options)
        self.tracker.queue_of[task.celery_id] = task.queue  # in-flight demand is counted per queue
        task.state = TaskState.QUEUED
        task.queued_at = task.queued_at or now

    # -- observation -----------------------------------------------------------------------
    def apply_updates(self, updates: Iterable[TaskUpdate], now: float) -> None:
        updates = [u for u in updates if u is not None]
        if not updates:
            return
        with self._lock, self.store.session() as session:
            tasks = self._tasks_by(session, Task.celery_id, {u.task_id for u in updates})
            for update in updates:
                task = tasks.get(update.task_id)
                if task is not None:  # else not ours (another publisher) or an older attempt
                    self._apply_update(session, task, update)

    @staticmethod
    def _tasks_by(session: Session, column: Any, keys: Collection[str]) -> dict[str, Task]:
        """Load the tasks whose ``column`` is in ``keys``, in chunks: one query, not one per key."""
        keys, found = list(keys), {}
        for start in range(0, len(keys), MGET_CHUNK):
            for task in session.scalars(select(Task).where(column.in_(keys[start:start + MGET_CHUNK]))):
                found[getattr(task, column.key)] = task
        return found

    def _apply_update(self, session: Session, task: Task, update: TaskUpdate) -> None:
        node = node_id_of(update.worker) if update.worker else None
        if update.kind in ("received", "started") and task.state in IN_BROKER:
            task.node_id = node or task.node_id
        if update.kind == "started" and task.state in IN_BROKER:
            if task.attempts >= 1 and task.state == TaskState.RUNNING:
                record_event(session, EventKind.TASK_RERUN, "redelivered",
                             f"task {task.name}[{task.index}] runs again on node {node} after its node was lost",
                             now=update.at, job_id=task.job_id, task_id=task.id, node_id=node)
            task.state = TaskState.RUNNING
            task.attempts += 1
            task.started_at = task.started_at or update.at
            self._mark_job_running(session, task.job_id, update.at)
        elif update.kind in ("succeeded", "failed"):
            self._check_now.add(task.celery_id)
        elif update.kind == "rejected" and task.state == TaskState.RUNNING:
            task.state = TaskState.QUEUED

    def _mark_job_running(self, session: Session, job_id: str, now: float) -> None:
        job = session.get(Job, job_id)
        if job is not None and job.state == JobState.QUEUED:
            job.state = JobState.RUNNING
            job.started_at = now

    # -- reconciliation with the result backend --------------------------------------------
    def reconcile(self, now: float, full: bool | None = None) -> int:
        """Record outcomes stored in the result backend; returns how many tasks finished.

        Each call checks running tasks and those whose end was announced; every
        ``FULL_RECONCILE_EVERY``-th call (or ``full=True``) checks every unfinished task, which
        repairs whatever events were missed.
        """
        self._ticks += 1
        if full is None:
            full = self._ticks % FULL_RECONCILE_EVERY == 1
        finished = 0
        with self._lock, self.store.session() as session:
            query = select(Task.id, Task.celery_id).where(Task.state.in_(list(IN_BROKER)))
            if not full:
                query = query.where(
                    (Task.state == TaskState.RUNNING) | Task.celery_id.in_(list(self._check_now))
                )
            candidates = session.execute(query).all()
            self._check_now.clear()
            news = [(task_id, meta) for (task_id, _celery_id), meta
                    in zip(candidates, self._fetch_meta([c for _, c in candidates]), strict=True) if meta is not None]
            tasks = self._tasks_by(session, Task.id, [task_id for task_id, _ in news])
            for task_id, meta in news:  # only tasks the backend has something to say about
                finished += self._apply_meta(session, tasks[task_id], meta, now)
        return finished

    def _fetch_meta(self, celery_ids: list[str]) -> list[dict | None]:
        backend = self.app.backend
        raw: list[bytes | None] = []
        for start in range(0, len(celery_ids), MGET_CHUNK):
            chunk = celery_ids[start:start + MGET_CHUNK]
            raw.extend(backend.client.mget([backend.get_key_for_task(cid) for cid in chunk]))
        return [backend.decode_result(value) if value else None for value in raw]

    def _apply_meta(self, session: Session, task: Task, meta: dict, now: float) -> int:
        status = meta.get("status")
        if status == "STARTED" and task.state == TaskState.QUEUED:
            hostname = (meta.get("result") or {}).get("hostname") if isinstance(meta.get("result"), dict) else None
            task.state = TaskState.RUNNING
            task.attempts = max(task.attempts, 1)
            task.node_id = node_id_of(hostname) if hostname else task.node_id
            task.started_at = task.started_at or now
            self._mark_job_running(session, task.job_id, now)
            return 0
        if status == "SUCCESS":
            self._finish(session, task, TaskState.SUCCEEDED, now, result=meta.get("result"), worker=meta.get("worker"))
            return 1
        if status == "FAILURE":
            error = _describe_failure(meta.get("result"))
            if task.publishes <= task.max_retries:
                record_event(session, EventKind.TASK_RETRY, "task-failed",
                             f"task {task.name}[{task.index}] failed ({error}); retry {task.publishes} of {task.max_retries}",
                             now=now, job_id=task.job_id, task_id=task.id, node_id=task.node_id)
                self.tracker.forget(task.celery_id)
                self.guard(f"retry task {task.id} of job {task.job_id}")  # a stale leader must not publish it too
                self._publish(task, now)
                return 0
            self._finish(session, task, TaskState.FAILED, now, error=error, worker=meta.get("worker"))
            return 1
        return 0

    def _finish(self, session: Session, task: Task, state: TaskState, now: float, *,
                result: Any = None, error: str | None = None, worker: str | None = None) -> None:
        if task.state not in IN_BROKER:
            return  # already recorded: a result is recorded once
        task.state = state
        task.result = result
        task.error = error
        task.completions += 1
        task.finished_at = now
        task.attempts = max(task.attempts, 1)
        if worker:
            task.node_id = node_id_of(worker)
        self.tracker.forget(task.celery_id)
        session.flush()
        self._settle_job(session, task.job_id, now, failed_task=task if state == TaskState.FAILED else None)

    def _settle_job(self, session: Session, job_id: str, now: float, failed_task: Task | None) -> None:
        job = session.get(Job, job_id)
        if job is None or job.state in FINISHED_JOB:
            return
        if failed_task is not None:
            job.error = f"task {failed_task.name}[{failed_task.index}] failed: {failed_task.error}"
            self._cancel_unstarted(session, job_id, now)
            self._end_job(session, job, JobState.FAILED, now)
            return
        unfinished = session.scalars(select(Task.id).where(
            Task.job_id == job_id, Task.state.in_(list(NOT_SUCCEEDED))).limit(1)).first()
        if unfinished is None:
            self._end_job(session, job, JobState.SUCCEEDED, now)

    def _end_job(self, session: Session, job: Job, state: JobState, now: float) -> None:
        job.state = state
        job.finished_at = now
        took = f" in {now - job.created_at:.1f} s" if job.created_at else ""
        record_event(session, EventKind.JOB_FINISHED, str(state),
                     f"job {job.name} ({job.id}) {state}{took}" + (f": {job.error}" if job.error else ""),
                     now=now, job_id=job.id)

    def _cancel_unstarted(self, session: Session, job_id: str, now: float) -> None:
        revoked = []
        for task in session.scalars(select(Task).where(Task.job_id == job_id, Task.state.in_(
                [TaskState.PENDING, TaskState.QUEUED]))):
            if task.state == TaskState.QUEUED and task.celery_id:
                revoked.append(task.celery_id)
            task.state = TaskState.CANCELLED
            task.finished_at = now
        if revoked:
            self.app.control.revoke(revoked)  # one broadcast for the whole job

    # -- cancellation ----------------------------------------------------------------------
    def cancel(self, job_id: str, now: float) -> bool:
        """Cancel a job: tasks not started are revoked; running tasks finish and are recorded."""
        with self._lock, self.store.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state in FINISHED_JOB:
                return False
            self._cancel_unstarted(session, job_id, now)
            job.error = "cancelled by a user"
            self._end_job(session, job, JobState.CANCELLED, now)
            return True


def _describe_failure(result: Any) -> str:
    if isinstance(result, dict) and "exc_type" in result:
        message = result.get("exc_message")
        if isinstance(message, (list, tuple)):
            message = ", ".join(str(m) for m in message)
        return f"{result['exc_type']}: {message}"
    return str(result)
