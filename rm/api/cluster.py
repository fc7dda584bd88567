"""Cluster endpoints: pools, nodes (with their history), scaling events, controller status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, status
from sqlalchemy import select

from rm.api.deps import Caller, caller, iso, require, runtime
from rm.auth import Role
from rm.controller import count_by_pool
from rm.models import Node, NodeHistory, ScalingEvent
from rm.states import LIVE

router = APIRouter(prefix="/api/v1", tags=["cluster"])


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
    with rt.store.session() as session:
        return [_node_view(n) for n in session.scalars(query.limit(5000))]


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
    rt.controller.request_drain(node_id, by=who.name)
    return {"id": node_id, "drain": "requested"}


@router.get("/events")
def events(pool: str | None = None, node: str | None = None, kind: str | None = None, job: str | None = None,
           since_id: int = 0, limit: int = 200, who: Caller = Depends(caller), rt=Depends(runtime)) -> list[dict[str, Any]]:  # noqa: ANN001
    query = select(ScalingEvent).where(ScalingEvent.id > since_id)
    for column, value in ((ScalingEvent.pool, pool), (ScalingEvent.node_id, node), (ScalingEvent.kind, kind),
                          (ScalingEvent.job_id, job)):
        if value:
            query = query.where(column == value)
    query = query.order_by(ScalingEvent.id.desc()).limit(min(max(limit, 1), 2000))
    with rt.store.session() as session:
        rows = list(session.scalars(query))
    return [{
        "id": e.id, "at": iso(e.at), "kind": e.kind, "cause": e.cause, "message": e.message, "pool": e.pool,
        "node": e.node_id, "job": e.job_id, "task": e.task_id, "data": e.data,
    } for e in reversed(rows)]


@router.get("/status")
def controller_status(who: Caller = Depends(caller), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    return rt.controller.status()
