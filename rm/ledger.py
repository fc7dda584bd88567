"""The ledger: one billed interval per node, from its launch request to its confirmed destruction.

Why these two ends: a cloud bills a VM from the moment it is asked for (a boot is paid time)
until it is really gone, not from "ready" to "drained". What is billed when it closes:

- ``terminated`` after a provider destroyed it: the whole lifetime, rounded per the pool's rule;
- ``failed`` before the provider created anything (its launch call failed), or ``terminated``
  straight from ``requested`` (cancelled before any provider call): nothing, billed 0;
- ``failed`` after the VM existed (boot timeout) or ``lost``: the entry stays open until the
  provider confirms the destruction (the terminate call returns, or a listing no longer shows
  it), and is billed to that moment.

How an entry's cost falls on the calendar (:func:`cost_before`): its time is spread over the
hours it ran, and the rounding (the rest of the last unit, or the minimum) falls at its end. So a
report for any window, and a budget for any period, take exactly their share, and the shares of
contiguous windows add up to the entry's cost exactly.
"""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from rm.billing import UNIT_S, ZERO, BillingRule
from rm.config import PoolConfig
from rm.models import LedgerEntry, Node
from rm.states import NodeStatus

S = NodeStatus
NOTHING_CREATED = frozenset({S.REQUESTED, S.PROVISIONING})  # a failure from here created no VM
AWAITING_DESTRUCTION = frozenset({S.FAILED, S.LOST})  # the VM may still exist; billed until confirmed gone


def rule_of(entry: LedgerEntry) -> BillingRule:
    return BillingRule(entry.price_per_hour, entry.unit_s, entry.minimum_s)


def open_entry(session: Session, node: Node, pool: PoolConfig, currency: str, now: float) -> LedgerEntry:
    """Start billing ``node`` at its launch request, under the pool's price and rule of today."""
    entry = LedgerEntry(node_id=node.id, pool=node.pool, provider=node.provider, currency=currency,
                        price_per_hour=pool.price_per_hour, unit_s=UNIT_S[pool.billing.granularity],
                        minimum_s=pool.billing.minimum_s, slots=node.slots, started_at=now)
    session.add(entry)
    return entry


def _open_entry_of(session: Session, node_id: str) -> LedgerEntry | None:
    return session.scalar(select(LedgerEntry).where(LedgerEntry.node_id == node_id, LedgerEntry.ended_at.is_(None)))


def close_entry(entry: LedgerEntry, now: float, billed: bool, reason: str) -> None:
    """Close an entry at ``now``: billed per its rule, or for nothing when no VM ever existed."""
    rule = rule_of(entry)
    entry.ended_at = max(now, entry.started_at)
    entry.billed_s = rule.billed_s(entry.ended_at - entry.started_at) if billed else 0
    entry.cost = rule.cost(entry.billed_s)
    entry.end_reason = reason


def on_terminal(session: Session, node: Node, previous: NodeStatus, target: NodeStatus, now: float) -> None:
    """Close the node's entry when its status move ends the billing (see the module docstring)."""
    if target == S.TERMINATED or (target == S.FAILED and previous in NOTHING_CREATED):
        entry = _open_entry_of(session, node.id)
        if entry is not None:
            billed = previous not in NOTHING_CREATED
            close_entry(entry, now, billed, f"{previous} -> {target}" + ("" if billed else ": no VM was created"))


def confirm_destroyed(session: Session, node: Node, now: float) -> None:
    """The provider confirmed a failed or lost node is gone: stop billing it."""
    if NodeStatus(node.status) in AWAITING_DESTRUCTION:
        entry = _open_entry_of(session, node.id)
        if entry is not None:
            close_entry(entry, now, True, f"{node.status}: the provider confirmed its destruction")


def confirm_gone(session: Session, pool: str, listed: set[str], listing_started_at: float, now: float) -> None:
    """A listing of ``pool`` no longer shows some failed or lost nodes: they are gone."""
    rows = session.execute(
        select(LedgerEntry, Node).join(Node, Node.id == LedgerEntry.node_id).where(
            LedgerEntry.pool == pool, LedgerEntry.ended_at.is_(None),
            Node.status.in_([s.value for s in AWAITING_DESTRUCTION]), Node.updated_at < listing_started_at))
    for entry, node in rows:
        if node.id not in listed:
            close_entry(entry, now, True, f"{node.status}: gone from the provider's listing")


def entries_between(session: Session, start: float, end: float) -> list[LedgerEntry]:
    """Entries whose cost falls (partly) in ``[start, end)``: begun before its end, not closed before its start."""
    return list(session.scalars(select(LedgerEntry).where(
        LedgerEntry.started_at < end,
        or_(LedgerEntry.ended_at.is_(None), LedgerEntry.ended_at >= start)).order_by(LedgerEntry.id)))


def cost_before(entry: LedgerEntry, t: float, now: float, committed: bool = False) -> Decimal:
    """The entry's cost that falls before instant ``t``.

    Its time accrues from ``started_at``; its rounding falls at its end. An open entry ends at
    ``now``: as spent (its elapsed time, unrounded), or as ``committed`` (billed as if destroyed
    now: the rest of its current unit, at least its minimum).
    """
    rule = rule_of(entry)
    if entry.ended_at is not None:
        end, billed = entry.ended_at, entry.billed_s or 0
        total = entry.cost if entry.cost is not None else rule.cost(billed)
    else:
        end = max(now, entry.started_at)
        elapsed = end - entry.started_at
        billed = rule.committed_s(elapsed) if committed else elapsed
        total = rule.cost(billed)
    if t > end:
        return total
    accrued = min(max(t - entry.started_at, 0.0), end - entry.started_at, billed)
    return rule.cost(accrued) if accrued > 0 else ZERO


def cost_between(entry: LedgerEntry, start: float, end: float, now: float, committed: bool = False) -> Decimal:
    """The entry's share of ``[start, end)``; shares of contiguous windows add up exactly."""
    return cost_before(entry, end, now, committed) - cost_before(entry, start, now, committed)
