"""Budgets: where each configured budget stands now, read from the ledger, and its alerts.

Why computed from the ledger every tick and never kept in memory: the ledger is the one record
of money, persisted with every node, so a restart (or a second reader such as the API) finds the
same spent and committed figures without replaying anything.

Periods are calendar days and months in UTC. ``spent`` is the ledger's cost falling in the
period up to now (live nodes at their elapsed time). ``committed`` is what the period is already
bound to pay: closed entries as billed, live nodes as if destroyed now (the rest of their current
billing unit, at least their minimum). Alerts compare ``committed`` with the amount, since that
is also what the launch gate compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from policies.snapshot import BudgetView
from rm.billing import ZERO, cents, show
from rm.config import BudgetConfig, ClusterConfig
from rm.events import EventKind, record_event
from rm.ledger import cost_between, entries_between
from rm.models import BudgetAlert, LedgerEntry


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The UTC calendar day or month containing ``now``, as ``[start, end)`` epoch seconds."""
    moment = datetime.fromtimestamp(now, UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        end = start + timedelta(days=1)
    else:
        start = start.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


@dataclass(frozen=True)
class ConfiguredBudget:
    scope: str  # "global" or "pool <name>"
    pool: str | None
    config: BudgetConfig


def configured_budgets(config: ClusterConfig) -> list[ConfiguredBudget]:
    budgets = [ConfiguredBudget("global", None, config.budgets.global_)] if config.budgets.global_ else []
    budgets += [ConfiguredBudget(f"pool {name}", name, b) for name, b in sorted(config.budgets.pools.items())]
    return budgets


CLOSING_MARGIN_S = 3600.0  # entries closed this long before the latest one summed are read again, to be safe


@dataclass
class ClosedShare:
    """Closed ledger entries' share of one budget period, summed once and kept between ticks."""

    node_ids: set[str] = field(default_factory=set)  # one ledger entry per node
    total: Decimal = ZERO
    watermark: float = float("-inf")  # the latest ``ended_at`` summed


class BudgetCache:
    """What the controller keeps so a tick reads only open entries and those closed since the last tick.

    Why: a closed entry's share of a fixed period never changes, but summing a month of entries
    with Decimal every tick grows with the month (about 0.37 s a tick at 10,000 entries without
    this cache, ``bench/budget_tick.py``). Entries close at the controller's ``now``, so anything
    closed since the last tick has ``ended_at`` at or after the watermark; a margin and the set of
    entries summed (one per node) make a late or repeated row harmless.
    """

    def __init__(self) -> None:
        self.shares: dict[tuple[str, float, float], ClosedShare] = {}

    def share(self, scope: str, bounds: tuple[float, float]) -> ClosedShare:
        key = (scope, *bounds)
        if key not in self.shares:
            self.shares = {k: v for k, v in self.shares.items() if k[0] != scope}  # a new period: forget the old
            self.shares[key] = ClosedShare()
        return self.shares[key]


def budget_views(session: Session, config: ClusterConfig, now: float,
                 cache: BudgetCache | None = None) -> tuple[BudgetView, ...]:
    """Every configured budget's spent, committed and burn rate at ``now``, for the policy."""
    budgets = configured_budgets(config)
    if not budgets:
        return ()
    cache = cache or BudgetCache()
    bounds = {b.scope: period_bounds(b.config.period, now) for b in budgets}
    shares = {b.scope: cache.share(b.scope, bounds[b.scope]) for b in budgets}
    since = min(max(bounds[b][0], shares[b].watermark - CLOSING_MARGIN_S) for b in bounds)
    entries = entries_between(session, since, max(e for _, e in bounds.values()))
    return views_from_entries(config, entries, now, cache)


def views_from_entries(config: ClusterConfig, entries: Iterable[LedgerEntry], now: float,
                       cache: BudgetCache) -> tuple[BudgetView, ...]:
    """Budget views from ledger entries already at hand: the open ones and those closed since the last call.

    Why apart from the query: the simulator keeps its ledger entries in memory and asks the same
    arithmetic as the controller, without a database.
    """
    budgets = configured_budgets(config)
    bounds = {b.scope: period_bounds(b.config.period, now) for b in budgets}
    shares = {b.scope: cache.share(b.scope, bounds[b.scope]) for b in budgets}
    entries = list(entries)
    return tuple(_view(b, config.currency, [e for e in entries if b.pool in (None, e.pool)], bounds[b.scope],
                       shares[b.scope], now) for b in budgets)


def _view(budget: ConfiguredBudget, currency: str, entries: list[LedgerEntry], bounds: tuple[float, float],
          share: ClosedShare, now: float) -> BudgetView:
    start, end = bounds
    live = [e for e in entries if e.ended_at is None]
    for entry in entries:
        if entry.ended_at is not None and entry.node_id not in share.node_ids and entry.ended_at >= start \
                and entry.started_at < end:
            share.node_ids.add(entry.node_id)
            share.total += cost_between(entry, start, end, now)
            share.watermark = max(share.watermark, entry.ended_at)
    return BudgetView(
        scope=budget.scope, pool=budget.pool, currency=currency, period=budget.config.period,
        amount=budget.config.amount, max_burn_per_hour=budget.config.max_burn_per_hour,
        spent=share.total + sum((cost_between(e, start, end, now) for e in live), ZERO),
        committed=share.total + sum((cost_between(e, start, end, now, committed=True) for e in live), ZERO),
        burn_per_hour=sum((e.price_per_hour for e in live), ZERO),
        hard_stop=budget.config.hard_stop,
    )


def record_alerts(session: Session, config: ClusterConfig, views: tuple[BudgetView, ...], now: float) -> list[BudgetAlert]:
    """Record each threshold a budget's committed spend crossed this period, once (an event too)."""
    thresholds = {b.scope: b.config.alert_thresholds for b in configured_budgets(config)}
    raised = []
    for view in views:
        if not view.amount:
            continue
        start, _ = period_bounds(view.period, now)
        ratio = view.committed / view.amount
        crossed = [t for t in thresholds.get(view.scope, ()) if ratio >= t]
        if not crossed:
            continue
        known = set(session.scalars(select(BudgetAlert.threshold).where(
            BudgetAlert.scope == view.scope, BudgetAlert.period_start == start)))
        for threshold in crossed:
            if threshold in known:
                continue
            alert = BudgetAlert(scope=view.scope, period_start=start, threshold=threshold,
                                committed=view.committed, amount=view.amount, at=now)
            session.add(alert)
            raised.append(alert)
            message = (f"{view.scope} budget at {threshold:.0%} of its {view.period_word} amount: committed "
                       f"{show(view.committed, view.currency)} of {show(view.amount, view.currency)}")
            record_event(session, EventKind.BUDGET_ALERT, "budget", message, now=now, pool=view.pool,
                         data={"scope": view.scope, "threshold": str(threshold), "committed": str(view.committed),
                               "amount": str(view.amount)})
    return raised


def budget_status(session: Session, config: ClusterConfig, now: float) -> dict[str, Any]:
    """What ``GET /api/v1/budget`` shows: each budget's figures, projection and alerts this period."""
    def money(value: Decimal | None) -> str | None:
        return None if value is None else str(cents(value))

    out = []
    for view in budget_views(session, config, now):
        start, end = period_bounds(view.period, now)
        projected = view.spent + view.burn_per_hour * Decimal(str(round(max(end - now, 0.0), 3))) / 3600
        remaining = None if view.amount is None else view.amount - view.committed
        alerts = session.scalars(select(BudgetAlert).where(
            BudgetAlert.scope == view.scope, BudgetAlert.period_start == start).order_by(BudgetAlert.threshold))
        out.append({
            "scope": view.scope, "pool": view.pool, "period": view.period,
            "period_start": start, "period_end": end, "amount": money(view.amount),
            "max_burn_per_hour": money(view.max_burn_per_hour), "burn_per_hour": money(view.burn_per_hour),
            "spent": money(view.spent), "committed": money(view.committed), "remaining": money(remaining),
            "projected": money(projected), "hard_stop": view.hard_stop, "capped": view.capped,
            "alerts": [{"threshold": str(a.threshold), "at": a.at, "committed": money(a.committed)} for a in alerts],
        })
    return {"currency": config.currency, "at": now, "budgets": out}
