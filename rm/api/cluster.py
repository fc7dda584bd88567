"""Cluster endpoints: pools, nodes (with their history), scaling events, controller status."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from sqlalchemy import or_, select

from rm.api.costs import parse_instant
from rm.api.deps import Caller, caller, iso, leader_only, require, runtime, sees_all_jobs
from rm.auth import Role
from rm.controller import count_by_pool
from rm.billing import cents
from rm.ledger import cost_before
from rm.models import Job, LedgerEntry, Node, NodeHistory, ScalingEvent
from rm.states import LIVE, SERVING

router = APIRouter(prefix="/api/v1", tags=["cluster"])
MAX_ROW_ID = 2**31 - 1  # an Integer id column on PostgreSQL: a larger value would be a 500, not an empty list


def _node_view(node: Node) -> dict[str, Any]:
    return {
        "id": node.id, "pool": node.pool, "provider": node.provider, "state": node.status,
        "reason": node.status_reason, "slots": node.slots, "labels": node.labels,
        "running_tasks": node.running_tasks, "created_at": iso(node.created_at),
        "registered_at": iso(node.registered_at), "ended_at": iso(node.ended_at),
    }


@router.get("/pools")
def pools(who: Caller = Depends(caller), rt=Depends(runtime)) -> list[dict[str, Any]]:  # noqa: ANN001
    with rt.store.session() as session:
        live = list(session.scalars(select(Node).where(Node.status.in_([s.value for s in LIVE]))))
    targets = {t["pool"]: t for t in rt.controller.status().get("targets", [])}
    counts = count_by_pool(live)
    out = []
    for pool in rt.config().pools:
        out.append({
            "name": pool.name, "provider": pool.provider, "priority": pool.priority, "slots": pool.slots,
            "min_nodes": pool.min_nodes, "max_nodes": pool.max_nodes, "labels": list(pool.labels),
            "price_per_hour": float(pool.price_per_hour), "nodes": counts.get(pool.name, {}), "target_nodes": targets.get(pool.name, {}).get("target_nodes"),
        })
    return out


@router.get("/nodes")
def nodes(pool: str | None = None, state: str | None = None, all: bool = False,  # noqa: A002 - query name
          who: Caller = Depends(caller), rt=Depends(runtime)) -> list[dict[str, Any]]:  # noqa: ANN001
    query = select(Node).order_by(Node.created_at)
    if not all and state is None:
        query = query.where(Node.status.in_([s.value for s in LIVE]))
    if pool:
        query = query.where(Node.pool == pool)
    if state:
        query = query.where(Node.status == state)
    now = time.time()
    with rt.store.session() as session:
        found = list(session.scalars(query.limit(5000)))
        entries = {e.node_id: e for e in session.scalars(
            select(LedgerEntry).where(LedgerEntry.node_id.in_([n.id for n in found])))} if found else {}
    return [{**_node_view(n), "cost_so_far": str(cents(cost_before(entries[n.id], now, now))) if n.id in entries else None}
            for n in found]


@router.get("/nodes/{node_id}")
def node(node_id: str, who: Caller = Depends(caller), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    with rt.store.session() as session:
        found = session.get(Node, node_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node {node_id}")
        history = session.scalars(select(NodeHistory).where(NodeHistory.node_id == node_id).order_by(NodeHistory.id))
        return {**_node_view(found), "history": [
            {"from": h.from_status or None, "to": h.to_status, "reason": h.reason, "at": iso(h.at)} for h in history]}


@router.post("/nodes/{node_id}/drain", status_code=status.HTTP_202_ACCEPTED)
def drain(node_id: str, who: Caller = Depends(require(Role.ADMIN)), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    with rt.store.session() as session:
        found = session.get(Node, node_id)
        if found is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no node {node_id}")
        if found.status not in ("idle", "busy"):
            raise HTTPException(status.HTTP_409_CONFLICT, f"node {node_id} is {found.status}; only idle or busy nodes drain")
    leader_only(rt, f"drain node {node_id}")
    rt.controller.request_drain(node_id, by=who.name)
    return {"id": node_id, "drain": "requested"}


@router.get("/events")
def events(pool: str | None = None, node: str | None = None, kind: str | None = None, job: str | None = None,
           since_id: int = Query(0, ge=0, le=MAX_ROW_ID, description="events with a larger id only"), since: str | None = None, until: str | None = None, limit: int = 200,
           who: Caller = Depends(caller), rt=Depends(runtime)) -> list[dict[str, Any]]:  # noqa: ANN001
    """Events, newest ``limit`` first cut, returned oldest first; ``since``/``until`` are ISO 8601 (UTC
    without an offset), ``since`` inclusive and ``until`` exclusive."""
    query = select(ScalingEvent).where(ScalingEvent.id > since_id)
    if since:
        query = query.where(ScalingEvent.at >= parse_instant(since, "since", 0.0))
    if until:
        query = query.where(ScalingEvent.at < parse_instant(until, "until", 0.0))
    for column, value in ((ScalingEvent.pool, pool), (ScalingEvent.node_id, node), (ScalingEvent.kind, kind),
                          (ScalingEvent.job_id, job)):
        if value:
            query = query.where(column == value)
    if not sees_all_jobs(who):  # a user reads cluster events and their own jobs' events only
        query = query.where(or_(ScalingEvent.job_id.is_(None),
                                ScalingEvent.job_id.in_(select(Job.id).where(Job.owner == who.name))))
    query = query.order_by(ScalingEvent.id.desc()).limit(min(max(limit, 1), 2000))
    with rt.store.session() as session:
        rows = list(session.scalars(query))
    return [{
        "id": e.id, "at": iso(e.at), "kind": e.kind, "cause": e.cause, "message": e.message, "pool": e.pool,
        "node": e.node_id, "job": e.job_id, "task": e.task_id, "data": e.data,
    } for e in reversed(rows)]


@router.get("/status")
def controller_status(who: Caller = Depends(caller), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    """The controller's last tick, and the leader: holder and fencing epoch (``ha`` false: no election)."""
    return {**rt.controller.status(), "leader": rt.leadership()}


@router.get("/timeline")
def timeline(who: Caller = Depends(caller), rt=Depends(runtime)) -> list[dict[str, Any]]:  # noqa: ANN001
    """The recent ticks (up to 300, newest last): demand in tasks and slots vs. serving capacity."""
    slots = {p.name: p.slots for p in rt.config().pools}
    serving = {str(s) for s in SERVING}
    out = []
    for report in list(rt.controller.reports):
        nodes_by_pool = {pool: sum(n for state, n in states.items() if state in serving)
                         for pool, states in report.nodes_by_pool.items()}
        out.append({
            "at": iso(report.at), "demand_tasks": sum(d.total for d in report.demand),
            "needed_slots": sum(t.needed_slots for t in report.decision.targets),
            "capacity_slots": sum(n * slots.get(pool, 0) for pool, n in nodes_by_pool.items()),
            "serving_nodes": nodes_by_pool,
        })
    return out
