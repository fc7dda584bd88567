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
from sqlalchemy.orm import Session

from rm.models import ApiToken
from rm.store import Store

TOKEN_FILE = "token"
LOCAL_TOKEN_NAME = "local-cli"
ENV_ADMIN_NAME = "env-admin"
ADMIN_TOKEN_ENV = "RM_ADMIN_TOKEN"
MIN_TOKEN_CHARS = 24  # a shorter secret could be guessed; generated tokens have 43


class TokenError(ValueError):
    """A token cannot be created, seeded or revoked as asked; the message says why."""


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


def list_tokens(store: Store) -> list[ApiToken]:
    """Every token's name, role and creation time (the hashes stay in the database)."""
    with store.session() as session:
        return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)))


def token_named(session: Session, name: str) -> ApiToken | None:
    return session.scalars(select(ApiToken).where(ApiToken.name == name)).first()


def revoke_token(store: Store, name: str) -> None:
    """Delete the token ``name`` and every dashboard session opened with it."""
    from rm.sessions import end_sessions_of

    with store.session() as session:
        row = token_named(session, name)
        if row is None:
            raise TokenError(f"no token named {name!r}")
        end_sessions_of(session, row.id)
        session.delete(row)


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
    _drop_named(store, LOCAL_TOKEN_NAME)
    token = create_token(store, LOCAL_TOKEN_NAME, Role.ADMIN, now)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(token + "\n")
    return path


def _drop_named(store: Store, name: str) -> None:
    try:
        revoke_token(store, name)
    except TokenError:
        pass


def seed_env_admin(store: Store, now: float, environ: dict[str, str] | None = None) -> None:
    """Register ``RM_ADMIN_TOKEN`` (if set) as the admin token ``env-admin``.

    A value shorter than :data:`MIN_TOKEN_CHARS` stops the start: a guessable admin secret on an
    API that can spend money is worse than no start at all.
    """
    token = (os.environ if environ is None else environ).get(ADMIN_TOKEN_ENV)
    if not token:
        return
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenError(f"{ADMIN_TOKEN_ENV} is {len(token)} characters long; it must have at least "
                         f"{MIN_TOKEN_CHARS} (e.g. from `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if lookup(store, token) is None:
        _drop_named(store, ENV_ADMIN_NAME)
        create_token(store, ENV_ADMIN_NAME, Role.ADMIN, now, token=token)
