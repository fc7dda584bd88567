"""Dashboard sessions, stored server-side: a browser holds a random session id, never a token.

Why: a cookie holding the API token itself would outlive a logout (anyone who copied it keeps
the token) and could not be ended without revoking the token everywhere. Here the cookie holds
a random id whose SHA-256 is the row's key; logout deletes the row, revoking the token deletes
all its rows, and a row past ``expires_at`` is refused (and purged when the next session opens).
"""

from __future__ import annotations

import secrets

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from rm.auth import hash_token
from rm.models import ApiToken, DashboardSession
from rm.store import Store

SESSION_TTL_S = 12 * 3600


def open_session(store: Store, token_id: int, now: float, ttl_s: float = SESSION_TTL_S) -> str:
    """A new session for the token ``token_id``; returns the id the cookie will carry."""
    session_id = secrets.token_urlsafe(32)
    with store.session() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.expires_at < now))
        session.add(DashboardSession(id_hash=hash_token(session_id), token_id=token_id, created_at=now,
                                     expires_at=now + ttl_s))
    return session_id


def session_token(store: Store, session_id: str, now: float) -> ApiToken | None:
    """The token behind a live session id, or None (unknown, ended or expired)."""
    with store.session() as session:
        return session.scalars(
            select(ApiToken).join(DashboardSession, DashboardSession.token_id == ApiToken.id)
            .where(DashboardSession.id_hash == hash_token(session_id), DashboardSession.expires_at > now)).first()


def close_session(store: Store, session_id: str) -> None:
    with store.session() as session:
        session.execute(delete(DashboardSession).where(DashboardSession.id_hash == hash_token(session_id)))


def end_sessions_of(session: Session, token_id: int) -> None:
    """Inside the caller's transaction: end every session opened with the token ``token_id``."""
    session.execute(delete(DashboardSession).where(DashboardSession.token_id == token_id))
