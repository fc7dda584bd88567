"""Job endpoints: submit a workflow, follow it, cancel it.

Who sees what: a user sees and cancels only their own jobs (another user's job is a 404, as if
it did not exist); an admin sees and cancels all; a viewer sees all, read-only.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Body, Depends, HTTPException, status
from fastapi.responses import JSONResponse
from sqlalchemy import func, select

from rm.api.deps import Caller, caller, iso, leader_only, require, runtime, sees_all_jobs
from rm.auth import Role
from rm.demo import S1_ORTHO
from rm.models import Job, Task
from rm.workflow import WorkflowError

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"])


def visible_job(session, job_id: str, who: Caller) -> Job:  # noqa: ANN001 - a Session
    """The job if the caller may see it; another user's job answers 404 like a missing one,
    so job ids cannot be probed."""
    job = session.get(Job, job_id)
    if job is None or not (sees_all_jobs(who) or job.owner == who.name):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id}")
    return job


@router.post("", status_code=status.HTTP_201_CREATED)
def submit(body: Any = Body(..., examples=[S1_ORTHO]), who: Caller = Depends(require(Role.USER)), rt=Depends(runtime)) -> Any:  # noqa: ANN001
    if not isinstance(body, dict):
        return JSONResponse(status_code=422, content={"detail": [
            {"loc": ["body"], "msg": "a workflow must be a JSON object", "type": "model_type"}]})
    try:
        job_id = rt.jobs.submit(body, owner=who.name, now=time.time())
    except WorkflowError as error:
        detail = [{**e, "loc": ["body", *e["loc"]]} for e in error.errors[:200]]
        return JSONResponse(status_code=422, content={"detail": detail})
    return {"id": job_id}


def _task_view(task: Task) -> dict[str, Any]:
    return {
        "id": task.id, "name": task.name, "index": task.index, "run": task.run, "state": task.state,
        "node": task.node_id, "attempts": task.attempts, "labels": task.labels, "queued_at": iso(task.queued_at),
        "started_at": iso(task.started_at), "finished_at": iso(task.finished_at), "result": task.result,
        "error": task.error,
    }


def _job_view(job: Job, progress: dict[str, int]) -> dict[str, Any]:
    return {
        "id": job.id, "name": job.name, "owner": job.owner, "state": job.state, "error": job.error,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "progress": {"total": sum(progress.values()), **progress},
    }


def _progress(session, job_ids: list[str]) -> dict[str, dict[str, int]]:  # noqa: ANN001 - a Session
    rows = session.execute(select(Task.job_id, Task.state, func.count()).where(Task.job_id.in_(job_ids))
                           .group_by(Task.job_id, Task.state))
    out: dict[str, dict[str, int]] = {}
    for job_id, state, count in rows:
        out.setdefault(job_id, {})[state] = count
    return out


@router.get("")
def list_jobs(limit: int = 50, who: Caller = Depends(caller), rt=Depends(runtime)) -> list[dict[str, Any]]:  # noqa: ANN001
    with rt.store.session() as session:
        query = select(Job) if sees_all_jobs(who) else select(Job).where(Job.owner == who.name)
        jobs = list(session.scalars(query.order_by(Job.created_at.desc()).limit(min(max(limit, 1), 500))))
        progress = _progress(session, [j.id for j in jobs])
        return [_job_view(job, progress.get(job.id, {})) for job in jobs]


@router.get("/{job_id}")
def get_job(job_id: str, who: Caller = Depends(caller), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    with rt.store.session() as session:
        job = visible_job(session, job_id, who)
        tasks = list(session.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.seq)))
        progress = _progress(session, [job_id]).get(job_id, {})
        return {**_job_view(job, progress), "tasks": [_task_view(t) for t in tasks]}


@router.post("/{job_id}/cancel")
def cancel_job(job_id: str, who: Caller = Depends(require(Role.USER)), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    with rt.store.session() as session:
        job = visible_job(session, job_id, who)
        if who.role != Role.ADMIN and job.owner != who.name:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "only the job's owner or an admin may cancel it")
    leader_only(rt, f"cancel job {job_id}")
    cancelled = rt.jobs.cancel(job_id, time.time())
    return {"id": job_id, "cancelled": cancelled}
