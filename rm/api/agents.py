"""Agent enrolment endpoint: the one call a fresh VM makes, authenticated by its bootstrap token.

Why the bootstrap token as the bearer: the VM has no API token; its credential is the one-time
token in its user data, bound to its node id in the path (``rm.enrolment``), so this endpoint
needs a token like every other. An unknown token is a 401 (nothing proven); a real token that
may not be used (expired, replayed, another node's, a node given up) is a 403. Every refusal is
an event, a warning log line and a count in ``rm_enrol_refusals_total{reason}``, and never
echoes what was presented; a client refused 10 times in a minute gets 429 until the minute has
passed (``rm.throttle``), before its token is even looked at.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.security import HTTPAuthorizationCredentials

from rm.api.deps import bearer, runtime
from rm.enrolment import EnrolRefusal, redeem
from rm.events import EventKind, record_event
from rm.metrics import ENROL_REFUSALS
from rm.models import Node
from rm.throttle import RefusalThrottle

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])
log = logging.getLogger("rm.api.agents")

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}
THROTTLED = "throttled"
MISSING = "missing-token"


def throttle(request: Request) -> RefusalThrottle:
    return request.app.state.enrol_throttle


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _refuse(request: Request, node_id: str, reason: str, code: int, now: float) -> HTTPException:
    """Count a guess against the client and build the answer (never naming the token).

    Only unknown tokens (401) count: they are what guessing looks like. A real token refused (403:
    expired, replayed, another node's, a given-up node's) is no guess, and many VMs behind one NAT
    address must not lock each other out with them."""
    if code == status.HTTP_401_UNAUTHORIZED:
        throttle(request).refused(_client(request), now)
    ENROL_REFUSALS.labels(reason=reason).inc()
    return HTTPException(code, f"enrolment as node {node_id} refused: {reason}",
                         headers=UNAUTHORIZED if code == status.HTTP_401_UNAUTHORIZED else None)


def _throttled(request: Request, node_id: str, now: float) -> None:
    wait_s = throttle(request).retry_after(_client(request), now)
    if wait_s is not None:
        ENROL_REFUSALS.labels(reason=THROTTLED).inc()
        log.warning("enrolment as node %s from %s throttled for %d s: too many refusals", node_id,
                    _client(request), wait_s, extra={"node_id": node_id})
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, f"too many refused enrolments; retry in {wait_s} s",
                            headers={"Retry-After": str(wait_s)})


@router.post("/{node_id}/enrol")
def enrol(request: Request, node_id: str = Path(max_length=64),
          credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
          rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    """Trade a node's one-time bootstrap token (as the bearer token) for its agent settings."""
    now = time.time()
    _throttled(request, node_id, now)
    if credentials is None or not credentials.credentials:
        raise _refuse(request, node_id, MISSING, status.HTTP_401_UNAUTHORIZED, now)
    with rt.store.session() as session:
        refused = redeem(session, node_id, credentials.credentials, now)
        node = session.get(Node, node_id)
        if refused is None:
            settings = rt.agent_settings(rt.config().pool(node.pool), node.id)
            record_event(session, EventKind.ENROLLED, "bootstrap-token",
                         f"node {node.id} of pool {node.pool} enrolled with its one-time token",
                         now=now, pool=node.pool, node_id=node.id)
            return {"settings": asdict(settings)}
        record_event(session, EventKind.ENROL_REFUSED, str(refused),
                     f"enrolment as node {node_id!r} from {_client(request)} refused: {refused}", now=now,
                     pool=node.pool if node is not None else None, node_id=node_id)
    raise _refuse(request, node_id, str(refused), EnrolRefusal(refused).http_status, now)
