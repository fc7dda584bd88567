"""What the policy sees: a frozen picture of pools, nodes and demand taken at the top of a tick.

Why frozen dataclasses and no I/O: the controller observes everything once, then asks a
pure function for a decision. The same snapshot replayed gives the same decision, which is
what makes the policy testable with hypothesis and reusable by the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from rm.billing import ZERO, BillingRule

LabelSet = frozenset[str]


class PolicySettings(Protocol):
    """The knobs the policy reads (``rm.config.PolicyConfig`` satisfies it)."""

    load_factor: float
    idle_timeout_s: float
    scale_down_ticks: int
    max_launch_per_tick: int
    budget_guard_s: float  # stop a priced node this long before a charge that would pass a budget


@dataclass(frozen=True)
class NodeView:
    id: str
    pool: str
    status: str  # an rm.states.NodeStatus value
    running_tasks: int = 0  # tasks reserved or running on the node right now
    idle_since: float | None = None  # when it last became idle; None unless status is idle
    created_at: float = 0.0
    removal_streak: int = 0  # consecutive previous ticks it was recommended for removal


@dataclass(frozen=True)
class PoolView:
    name: str
    priority: int
    slots: int
    min_nodes: int
    max_nodes: int
    labels: LabelSet = frozenset()
    price_per_hour: Decimal = ZERO
    nodes: tuple[NodeView, ...] = ()
    launch_backoff_until: float = 0.0  # the pool's recent launches failed: no launch before this time
    billing_unit_s: int = 1  # the provider bills per second (1), minute (60) or hour (3600)
    billing_minimum_s: int = 0  # a launched node is billed at least this long
    release_before_end_s: float = 0.0  # an idle node is kept until this close to the end of its paid time
    boot_timeout_s: float = 0.0  # a launched node bills at most this long before it serves (or is failed)
    window_open: bool = True  # inside one of its bursting windows (or it has none); worked out by the controller

    @property
    def billing(self) -> BillingRule:
        return BillingRule(Decimal(str(self.price_per_hour)), self.billing_unit_s, self.billing_minimum_s)


@dataclass(frozen=True)
class Demand:
    """Tasks that need a slot of a pool carrying all of ``labels``."""

    labels: LabelSet
    waiting: int  # messages in the broker queue, all priority sub-queues
    in_flight: int = 0  # reserved (prefetched) or running on a worker

    @property
    def total(self) -> int:
        return self.waiting + self.in_flight


@dataclass(frozen=True)
class BudgetView:
    """One budget's standing at the top of the tick, worked out from the ledger by ``rm.budget``.

    ``committed`` is what the ledger already binds us to pay in the period: closed entries as
    billed, live nodes up to the end of their current billing unit (at least their minimum).
    """

    scope: str  # "global" or "pool <name>": how sentences name the budget
    pool: str | None  # None: the budget covers every pool
    currency: str
    period: str  # "day" | "month"
    amount: Decimal | None = None  # no period budget when None
    max_burn_per_hour: Decimal | None = None  # no burn-rate cap when None
    spent: Decimal = ZERO
    committed: Decimal = ZERO
    burn_per_hour: Decimal = ZERO  # sum of the prices of every node billed right now
    hard_stop: bool = False  # at the hard cap, destroy busy nodes too (their tasks are redelivered)

    def covers(self, pool: str) -> bool:
        return self.pool is None or self.pool == pool

    @property
    def period_word(self) -> str:
        return {"day": "daily", "month": "monthly"}.get(self.period, self.period)

    @property
    def capped(self) -> bool:
        """The hard cap: the money actually spent in the period has reached the amount."""
        return self.amount is not None and self.spent >= self.amount


@dataclass(frozen=True)
class Snapshot:
    pools: tuple[PoolView, ...]
    demand: tuple[Demand, ...] = field(default=())
    budgets: tuple[BudgetView, ...] = field(default=())

    def pool(self, name: str) -> PoolView:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)
