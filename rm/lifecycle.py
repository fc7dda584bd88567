"""The node lifecycle: one table of allowed status moves, one function that makes them.

Why: in the systems we replace, node states were written from many places and drifted
("a node is busy and terminated at once"). Here every status write goes through
:func:`change_status`, which refuses a move the table does not allow and appends a
timestamped history row carrying the reason.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from rm.ledger import on_terminal
from rm.models import Node, NodeHistory
from rm.states import TERMINAL, TRANSITIONS, NodeStatus


class IllegalTransition(ValueError):
    """A status move the lifecycle table does not allow."""


def can_move(current: NodeStatus, target: NodeStatus) -> bool:
    return target in TRANSITIONS[current]


def change_status(session: Session, node: Node, target: NodeStatus, reason: str, now: float) -> None:
    """Move ``node`` to ``target`` (validated) and record the move with its reason."""
    current = NodeStatus(node.status)
    if not can_move(current, target):
        raise IllegalTransition(f"node {node.id}: {current} -> {target} is not allowed ({reason})")
    node.status = target.value
    node.status_reason = reason
    node.updated_at = now
    if target in TERMINAL:
        node.ended_at = now
        on_terminal(session, node, current, target, now)  # the ledger stops billing once nothing can exist
    session.add(NodeHistory(node_id=node.id, from_status=current.value, to_status=target.value, reason=reason, at=now))


def create_node(session: Session, node: Node, reason: str, now: float) -> None:
    """Insert a node in its first status (``requested``), recording why it exists."""
    node.status = NodeStatus.REQUESTED.value
    node.status_reason = reason
    node.created_at = node.updated_at = now
    session.add(node)
    session.flush()  # the history row references the node
    session.add(NodeHistory(node_id=node.id, from_status="", to_status=NodeStatus.REQUESTED.value, reason=reason, at=now))
