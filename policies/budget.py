"""Money in the policy: the budget gate on launches, hard-cap drains, billing-aware release.

Why pure and separate from the load-factor arithmetic: the load factor says how many nodes the
demand justifies; this module says how many of them the money allows, with the same snapshot and
clock, so "never over budget" is a property tested with hypothesis like "never above max".

The gate. A launch of one node in pool p commits at least p's smallest charge (one billing unit,
or the pool's minimum billed duration if longer, or the charge of its first ``budget_guard_s``
seconds if more: the guard below would otherwise stop it as soon as it is up). For every budget covering p (the global one and
p's own), ``committed + n * smallest_charge <= amount`` and ``burn_per_hour + n * price_per_hour <=
max_burn_per_hour`` must hold, counting the launches already admitted earlier in the same tick.
A node of a free pool (price 0) is never refused for money.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from decimal import Decimal

from policies.decision import Cause, Drain, Launch, Refusal
from policies.snapshot import BudgetView, NodeView, PoolView
from rm.billing import ZERO, paid_until, show
from rm.states import NodeStatus

__all__ = ["BudgetGate", "hard_cap_drains", "paid_time_refusal"]


def _fits(room: Decimal, step: Decimal) -> int | None:
    """How many steps fit in ``room`` (None: unbounded, the step is free)."""
    if step <= 0:
        return None
    return max(int(room // step), 0)


class BudgetGate:
    """The budgets' running totals within one tick, as launches are admitted pool by pool."""

    def __init__(self, budgets: Iterable[BudgetView], guard_s: float = 0.0,
                 upcoming: dict[str, Decimal] | None = None) -> None:
        self.budgets = tuple(budgets)
        self.guard_s = guard_s
        self.committed = {b.scope: b.committed + (upcoming or {}).get(b.scope, ZERO) for b in self.budgets}
        self.burn = {b.scope: b.burn_per_hour for b in self.budgets}

    def _limit(self, budget: BudgetView, pool: PoolView, want: int) -> tuple[int, str | None, Cause | None]:
        """Nodes of ``pool`` this budget still admits, and the sentence explaining a shortfall."""
        unit, price, cur = self.first_charge(pool), pool.billing.price_per_hour, budget.currency
        allowed, message, cause = want, None, None
        if budget.amount is not None:
            fit = _fits(budget.amount - self.committed[budget.scope], unit)
            if fit is not None and fit < allowed:
                allowed, cause = fit, Cause.BUDGET
                after = self.committed[budget.scope] + fit * unit  # with the nodes it still admits
                what = "minimum unit" if unit == pool.billing.smallest_charge else f"for its first {self.guard_s:g} s"
                message = (f"committed {show(after, cur)} + {show(unit, cur)} {what} "
                           f"would pass the {budget.period_word} budget {show(budget.amount, cur)}")
        if budget.max_burn_per_hour is not None:
            fit = _fits(budget.max_burn_per_hour - self.burn[budget.scope], price)
            if fit is not None and fit < allowed:
                allowed, cause = fit, Cause.BURN_RATE
                after = self.burn[budget.scope] + fit * price
                message = (f"burn rate {show(after, cur)}/h + {show(price, cur)}/h would pass "
                           f"max_burn_per_hour {show(budget.max_burn_per_hour, cur)}/h")
        if message is not None:
            message += f" ({budget.scope} budget)"
        return allowed, message, cause

    def first_charge(self, pool: PoolView) -> Decimal:
        """What a new node commits at once: its minimum unit, or what it may bill while it boots
        (it cannot be stopped then) plus the guard's look ahead, if more."""
        rule = pool.billing
        return max(rule.smallest_charge, rule.cost(rule.committed_s(pool.boot_timeout_s + self.guard_s)))

    def admit(self, launch: Launch, pool: PoolView) -> tuple[Launch | None, Refusal | None]:
        """Trim ``launch`` to what every budget covering its pool allows; explain what is cut."""
        allowed, message, cause = launch.count, None, None
        for budget in self.budgets:
            if budget.covers(pool.name):
                limit, why, why_cause = self._limit(budget, pool, allowed)
                if limit < allowed:
                    allowed, message, cause = limit, why, why_cause
        for budget in self.budgets:
            if budget.covers(pool.name):
                self.committed[budget.scope] += allowed * self.first_charge(pool)
                self.burn[budget.scope] += allowed * pool.billing.price_per_hour
        refusal = None
        if cause is not None:
            refused = launch.count - allowed
            refusal = Refusal(cause, f"launch of {refused} node(s) in pool {pool.name} refused: {message}",
                              pool=pool.name, unmet_slots=refused * pool.slots)
        if allowed == 0:
            return None, refusal
        if allowed < launch.count:
            launch = dataclasses.replace(launch, count=allowed,
                                         message=f"{launch.message}; the budget admits {allowed} of {launch.count}")
        return launch, refusal


def hard_cap_drains(pools: Iterable[PoolView], budgets: Iterable[BudgetView], now: float,
                    guard_s: float) -> tuple[list[Drain], dict[str, Decimal]]:
    """Stop priced nodes before they would take a budget past its amount, and all of them at the cap.

    Two rules, one per budget with an amount:

    - *the guard*: the charges every live node will commit within the next ``guard_s`` (the
      rest of its billing unit and the next one for an hourly node near its end; ``guard_s`` of
      seconds for a per-second one) are added to ``committed``: first those of the nodes that
      cannot be stopped (booting, draining, or busy without ``hard_stop``), then busy before idle
      and oldest first; the nodes whose charge no longer fits are stopped now, before the new
      unit begins, because a unit once begun is paid in full;
    - *the cap*: once the money spent reaches the amount, every priced node is stopped.

    Idle nodes are drained; busy ones only when the budget says ``hard_stop`` (destroyed, their
    tasks come back through the broker), otherwise they run on and their charge is counted as
    committed. Free pools are never stopped for money.

    Returns the drains and, per budget scope, the upcoming charges of the nodes that stay: the
    launch gate counts them as committed, so it never admits a node the guard would stop.
    """
    drains: dict[str, Drain] = {}
    upcoming: dict[str, Decimal] = {}
    for budget in budgets:
        if budget.amount is None:
            continue
        room = budget.amount - budget.committed
        for pool, node in _priced_nodes(pools, budget):
            charge = _upcoming_charge(pool, node, now, guard_s)
            stoppable = node.id not in drains and _drainable(node, budget.hard_stop)
            if stoppable and (budget.capped or charge > max(room, ZERO)):
                drains[node.id] = _money_drain(pool, node, budget, charge, guard_s)
            elif node.id not in drains:
                room -= charge
        upcoming[budget.scope] = budget.amount - budget.committed - room
    return sorted(drains.values(), key=lambda d: d.node_id), upcoming


def _priced_nodes(pools: Iterable[PoolView], budget: BudgetView) -> list[tuple[PoolView, NodeView]]:
    """The live nodes of the priced pools this budget covers, in the order their charges are kept:
    the unstoppable first (their charge comes anyway), then busy before idle (stopping them loses
    work), then by age (the oldest's unit ends first)."""
    live = [(pool, node) for pool in pools if budget.covers(pool.name) and pool.billing.price_per_hour > ZERO
            for node in pool.nodes if node.status not in _ENDED]
    return sorted(live, key=lambda pn: (_drainable(pn[1], budget.hard_stop), not _busy(pn[1]),
                                        pn[1].created_at, pn[1].id))


def _upcoming_charge(pool: PoolView, node: NodeView, now: float, guard_s: float) -> Decimal:
    """What ``node`` will commit beyond its current unit within ``guard_s`` from now; for a node
    still on its way up, until ``guard_s`` past its boot timeout (nothing stops it before)."""
    rule = pool.billing
    elapsed = max(now - node.created_at, 0.0)
    ahead = elapsed + guard_s
    if node.status in _STARTING:
        ahead = max(ahead, pool.boot_timeout_s + guard_s)
    return rule.cost(rule.committed_s(ahead) - rule.committed_s(elapsed))


def _money_drain(pool: PoolView, node: NodeView, budget: BudgetView, charge: Decimal, guard_s: float) -> Drain:
    busy = _busy(node)
    verb = "destroying it and its running tasks (hard_stop)" if busy else "draining it"
    cur = budget.currency
    if budget.capped:
        why = f"spent {show(budget.spent, cur)} reached the {budget.period_word} budget {show(budget.amount, cur)}"
    else:
        why = (f"its next {guard_s:g} s would commit {show(charge, cur)} more, past the {budget.period_word} "
               f"budget {show(budget.amount, cur)} (committed {show(budget.committed, cur)})")
    message = f"node {node.id} in pool {pool.name}: {why} ({budget.scope} budget); {verb}"
    return Drain(node.id, pool.name, Cause.HARD_CAP, message, force=busy)


def _busy(node: NodeView) -> bool:
    return node.status == NodeStatus.BUSY or node.running_tasks > 0


_ENDED = frozenset({NodeStatus.TERMINATED, NodeStatus.FAILED})  # no longer billed
_STARTING = frozenset({NodeStatus.REQUESTED, NodeStatus.PROVISIONING, NodeStatus.BOOTING})


def _drainable(node: NodeView, hard_stop: bool) -> bool:
    if node.status == NodeStatus.IDLE and node.running_tasks == 0:
        return True
    return hard_stop and node.status in (NodeStatus.IDLE, NodeStatus.BUSY)


def paid_time_refusal(pool: PoolView, node: NodeView, serving: int, now: float) -> Refusal | None:
    """Keep an idle node whose paid time runs on (ProActive's release delay): releasing it now
    saves nothing, and it may serve the next burst for free. Not when the pool is over max_nodes."""
    if serving > pool.max_nodes or pool.billing.price_per_hour <= ZERO:
        return None
    left = paid_until(pool.billing, node.created_at, now) - now
    if left <= pool.release_before_end_s:
        return None
    return Refusal(Cause.PAID_TIME,
                   f"node {node.id} in pool {pool.name} kept: {left:.0f} s of its paid time left; "
                   f"released within {pool.release_before_end_s:g} s of its end", pool=pool.name)
