"""Money in the policy: the budget gate on launches, hard-cap drains, billing-aware release.

Why pure and separate from the load-factor arithmetic: the load factor says how many nodes the
demand justifies; this module says how many of them the money allows, with the same snapshot and
clock, so "never over budget" is a property tested with hypothesis like "never above max".

The gate. A launch of one node in pool p commits at least p's smallest charge (one billing unit,
or the pool's minimum billed duration if longer). For every budget covering p (the global one and
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

    def __init__(self, budgets: Iterable[BudgetView]) -> None:
        self.budgets = tuple(budgets)
        self.committed = {b.scope: b.committed for b in self.budgets}
        self.burn = {b.scope: b.burn_per_hour for b in self.budgets}

    def _limit(self, budget: BudgetView, pool: PoolView, want: int) -> tuple[int, str | None, Cause | None]:
        """Nodes of ``pool`` this budget still admits, and the sentence explaining a shortfall."""
        rule = pool.billing
        unit, price, cur = rule.smallest_charge, rule.price_per_hour, budget.currency
        allowed, message, cause = want, None, None
        if budget.amount is not None:
            fit = _fits(budget.amount - self.committed[budget.scope], unit)
            if fit is not None and fit < allowed:
                allowed, cause = fit, Cause.BUDGET
                after = self.committed[budget.scope] + fit * unit  # with the nodes it still admits
                message = (f"committed {show(after, cur)} + {show(unit, cur)} minimum unit "
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

    def admit(self, launch: Launch, pool: PoolView) -> tuple[Launch | None, Refusal | None]:
        """Trim ``launch`` to what every budget covering its pool allows; explain what is cut."""
        allowed, message, cause = launch.count, None, None
        for budget in self.budgets:
            if budget.covers(pool.name):
                limit, why, why_cause = self._limit(budget, pool, allowed)
                if limit < allowed:
                    allowed, message, cause = limit, why, why_cause
        rule = pool.billing
        for budget in self.budgets:
            if budget.covers(pool.name):
                self.committed[budget.scope] += allowed * rule.smallest_charge
                self.burn[budget.scope] += allowed * rule.price_per_hour
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


def hard_cap_drains(pools: Iterable[PoolView], budgets: Iterable[BudgetView]) -> list[Drain]:
    """Drain the priced nodes of every budget whose spending reached its amount.

    Idle nodes only, unless the budget says ``hard_stop``: then busy nodes are destroyed too and
    their tasks come back through the broker. Free pools are never drained for money.
    """
    drains: dict[str, Drain] = {}
    for budget in budgets:
        if not budget.capped:
            continue
        for pool in pools:
            if not budget.covers(pool.name) or pool.billing.price_per_hour <= ZERO:
                continue
            for node in pool.nodes:
                if node.id in drains or not _drainable(node, budget.hard_stop):
                    continue
                busy = node.status == NodeStatus.BUSY or node.running_tasks > 0
                verb = "destroying it and its running tasks (hard_stop)" if busy else "draining it"
                message = (f"node {node.id} in pool {pool.name}: spent {show(budget.spent, budget.currency)} reached "
                           f"the {budget.period_word} budget {show(budget.amount, budget.currency)} "
                           f"({budget.scope} budget); {verb}")
                drains[node.id] = Drain(node.id, pool.name, Cause.HARD_CAP, message, force=busy)
    return sorted(drains.values(), key=lambda d: d.node_id)


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
