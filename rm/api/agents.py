"""Agent enrolment endpoint: the one call a fresh VM makes, authenticated by its bootstrap token.

Why the bootstrap token as the bearer: the VM has no API token; its credential is the one-time
token in its user data, bound to its node id in the path (``rm.enrolment``), so this endpoint
needs a token like every other. Every refusal is an event and a warning log line; the 401
never echoes what was presented.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, status
from fastapi.security import HTTPAuthorizationCredentials

from rm.api.deps import bearer, runtime
from rm.enrolment import redeem
from rm.events import EventKind, record_event
from rm.models import Node

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


@router.post("/{node_id}/enrol")
def enrol(node_id: str = Path(max_length=64), credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
          rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    """Trade a node's one-time bootstrap token (as the bearer token) for its agent settings."""
    if credentials is None or not credentials.credentials:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "the node's bootstrap token is required", headers=UNAUTHORIZED)
    now = time.time()
    with rt.store.session() as session:
        refused = redeem(session, node_id, credentials.credentials, now)
        if refused is None:
            node = session.get(Node, node_id)
            settings = rt.agent_settings(rt.config().pool(node.pool), node.id)
            record_event(session, EventKind.ENROLLED, "bootstrap-token",
                         f"node {node.id} of pool {node.pool} enrolled with its one-time token",
                         now=now, pool=node.pool, node_id=node.id)
            return {"settings": asdict(settings)}
        node = session.get(Node, node_id)
        record_event(session, EventKind.ENROL_REFUSED, str(refused),
                     f"enrolment as node {node_id!r} refused: {refused}", now=now,
                     pool=node.pool if node is not None else None, node_id=node_id)
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"enrolment refused: {refused}", headers=UNAUTHORIZED)
