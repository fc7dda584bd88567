"""Shared API plumbing: the runtime behind the app, the caller's identity, time formatting.

Why a dependency and not middleware for auth: each route states the role it needs next to its
code, and FastAPI documents the bearer scheme in the OpenAPI spec.

Browsers: the dashboard's login trades a token for an HttpOnly, SameSite=Strict session cookie
(:data:`SESSION_COOKIE`, holding a random session id stored hashed server-side by
:mod:`rm.sessions`, so logging out or revoking the token ends the session), and this dependency
accepts it too. A cookie is sent by the browser on its own, so a state-changing
request authenticated by the cookie alone must also carry ``X-Requested-With`` (a header a
cross-site form cannot set): that is the CSRF guard. Bearer requests need no such header.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from rm.auth import Role, lookup
from rm.sessions import session_token

bearer = HTTPBearer(auto_error=False, description="an API token: rmctl up writes one to <state_dir>/token")

ROLE_RANK = {Role.VIEWER: 0, Role.USER: 1, Role.ADMIN: 2}
SESSION_COOKIE = "rm_session"
CSRF_HEADER = "X-Requested-With"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass(frozen=True)
class Caller:
    name: str
    role: Role


def runtime(request: Request) -> Any:
    return request.app.state.runtime


def _require_csrf_header(request: Request) -> None:
    if request.method not in SAFE_METHODS and not request.headers.get(CSRF_HEADER):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            f"a request authenticated by the session cookie must carry the {CSRF_HEADER} header")


def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    store = request.app.state.runtime.store
    secret = credentials.credentials if credentials is not None else ""
    if secret:
        token = lookup(store, secret)
    elif request.cookies.get(SESSION_COOKIE):
        token = session_token(store, request.cookies[SESSION_COOKIE], time.time())
        if token is not None:  # an unknown session is a 401 below, whatever the method
            _require_csrf_header(request)
    else:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "a bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})
    if token is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token or session",
                            headers={"WWW-Authenticate": "Bearer"})
    return Caller(name=token.name, role=Role(token.role))


def require(role: Role):  # noqa: ANN201 - a FastAPI dependency factory
    def check(who: Caller = Depends(caller)) -> Caller:
        if ROLE_RANK[who.role] < ROLE_RANK[role]:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {role} role; your token has {who.role}")
        return who

    return check


def leader_only(rt: Any, action: str) -> None:
    """Refuse (409) what only the acting instance can do, naming the leader to send it to.

    With high availability every instance serves the API, but drains and run-time policy
    changes live in the leader's memory: a standby would hold them for nobody. A cancel is the
    leader's too: it races the leader's publishing of the job's pending tasks.
    """
    if not rt.leading():
        holder = rt.leadership().get("holder") or "none elected yet"
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"this instance ({rt.instance_id}) is a standby and cannot {action}; "
                            f"send it to the leader ({holder})")


def sees_all_jobs(who: Caller) -> bool:
    """Admins manage every job and viewers watch them all (read-only); a user sees only their own."""
    return who.role != Role.USER


def iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")
