"""API tokens: stored hashed, carried as ``Authorization: Bearer <token>``, each with a role.

Why now, before the security issue: every endpoint but ``/healthz`` needs a token from day one.
``rmctl up`` creates a token for the local CLI user if it has none and writes it, readable by
that user only, to ``<state_dir>/token``; ``RM_ADMIN_TOKEN`` seeds an admin token at start-up.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from enum import StrEnum
from pathlib import Path

from sqlalchemy import select

from rm.models import ApiToken
from rm.store import Store

TOKEN_FILE = "token"
LOCAL_TOKEN_NAME = "local-cli"


class Role(StrEnum):
    ADMIN = "admin"
    USER = "user"
    VIEWER = "viewer"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(store: Store, name: str, role: Role, now: float, token: str | None = None) -> str:
    token = token or secrets.token_urlsafe(32)
    with store.session() as session:
        session.add(ApiToken(name=name, role=role.value, token_hash=hash_token(token), created_at=now))
    return token


def lookup(store: Store, token: str) -> ApiToken | None:
    with store.session() as session:
        return session.scalars(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()


def token_file(state_dir: str | Path) -> Path:
    return Path(state_dir) / TOKEN_FILE


def ensure_local_token(store: Store, state_dir: str | Path, now: float) -> Path:
    """Make sure ``<state_dir>/token`` holds a valid admin token for the local CLI user."""
    path = token_file(state_dir)
    if path.exists() and lookup(store, path.read_text().strip()):
        return path
    with store.session() as session:
        stale = session.scalars(select(ApiToken).where(ApiToken.name == LOCAL_TOKEN_NAME)).first()
        if stale is not None:
            session.delete(stale)
    token = create_token(store, LOCAL_TOKEN_NAME, Role.ADMIN, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return path


def seed_env_admin(store: Store, now: float) -> None:
    """Register ``RM_ADMIN_TOKEN`` (if set) as an admin token."""
    token = os.environ.get("RM_ADMIN_TOKEN")
    if token and lookup(store, token) is None:
        with store.session() as session:
            stale = session.scalars(select(ApiToken).where(ApiToken.name == "env-admin")).first()
            if stale is not None:
                session.delete(stale)
        create_token(store, "env-admin", Role.ADMIN, now, token=token)
