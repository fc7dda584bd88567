"""Agent enrolment: a VM trades its one-time bootstrap token for its broker settings.

Why: user data is readable by anything on the VM and by anyone who can read the VM in the
cloud console, so it must not carry the broker's credentials. It carries a random token bound
to the node id, valid until the node's boot timeout and usable once; the API answers it with
the agent's settings. An unknown, expired, replayed or mismatched token gets nothing and the
attempt becomes an event (a replay may mean the user data leaked).
"""

from __future__ import annotations

import hmac
import secrets
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.orm import Session

from rm.auth import hash_token
from rm.models import BootstrapToken, Node
from rm.states import NodeStatus


class EnrolRefusal(StrEnum):
    UNKNOWN = "unknown-token"  # 401: no such token at all (a guess, or garbage)
    EXPIRED = "expired-token"  # 403 from here on: a real token, refused
    REPLAYED = "replayed-token"
    WRONG_NODE = "WRONG_NODE"  # another node's token: its user data leaked
    NODE_GONE = "node-not-booting"

    @property
    def http_status(self) -> int:
        """401 when the caller proved nothing; 403 when the token is real but may not be used."""
        return 401 if self is EnrolRefusal.UNKNOWN else 403


def issue_token(session: Session, node_id: str, now: float, ttl_s: float) -> str:
    """A fresh token for ``node_id`` (a relaunch replaces the previous one)."""
    token = secrets.token_urlsafe(32)
    row = session.get(BootstrapToken, node_id)
    if row is None:
        session.add(BootstrapToken(node_id=node_id, token_hash=hash_token(token), expires_at=now + ttl_s))
    else:
        row.token_hash, row.expires_at, row.used_at = hash_token(token), now + ttl_s, None
    return token


def redeem(session: Session, node_id: str, token: str, now: float) -> EnrolRefusal | None:
    """Use the token once; returns why it is refused, or None when the node may enrol."""
    digest = hash_token(token)
    row = session.get(BootstrapToken, node_id)
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        elsewhere = session.scalars(select(BootstrapToken.node_id).where(BootstrapToken.token_hash == digest)).first()
        return EnrolRefusal.UNKNOWN if elsewhere is None else EnrolRefusal.WRONG_NODE
    if row.used_at is not None:
        return EnrolRefusal.REPLAYED
    if now > row.expires_at:
        return EnrolRefusal.EXPIRED
    node = session.get(Node, node_id)
    if node is None or node.status not in (NodeStatus.PROVISIONING, NodeStatus.BOOTING):
        return EnrolRefusal.NODE_GONE
    row.used_at = now
    return None
