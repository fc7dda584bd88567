"""Money in a simulation: the production ledger entries kept in memory, and the offline lower bound.

Why production :class:`~rm.models.LedgerEntry` rows (transient, never stored): the budget views
the policy sees and the cost a run reports come from :func:`rm.ledger.open_entry`,
:func:`rm.ledger.close_entry` and :func:`rm.budget.views_from_entries`, the code that bills a
real cluster, so a billing rule (hourly units, minimums) costs the same here as there.

The lower bound is priced on the run's own schedule: at every instant the tasks running then are
put on the free (on-prem) pools first, up to those pools' full capacity, and every other
task-second is charged at the cheapest slot price of a pool that could run it (price / slots,
per second, no rounding). The run itself paid at least that for each of those task-seconds, so
``cost / bound >= 1``; the ratio says how much idle, boot and rounding time the policy bought.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from rm.billing import ZERO
from rm.budget import BudgetCache, views_from_entries
from rm.config import ClusterConfig, PoolConfig
from rm.ledger import close_entry, open_entry
from rm.models import LedgerEntry
from policies.snapshot import BudgetView

LabelSet = frozenset[str]


class MemoryLedger:
    """The run's ledger entries: open ones by node id, and every closed one."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.open: dict[str, LedgerEntry] = {}
        self.closed: list[LedgerEntry] = []
        self._closed_since_views: list[LedgerEntry] = []
        self._cache = BudgetCache()
        self._burn = 0.0  # sum of open entries' prices per second (floats: the spend plot only)
        self._burn_origin = 0.0  # sum of price_per_second * started_at
        self._closed_cost = 0.0

    def add(self, entry: LedgerEntry) -> None:  # what rm.ledger.open_entry calls on its "session"
        self.open[entry.node_id] = entry

    def start(self, node: object, pool: PoolConfig, now: float) -> None:
        entry = open_entry(self, node, pool, self.config.currency, now)  # type: ignore[arg-type]
        per_s = float(entry.price_per_hour) / 3600
        self._burn += per_s
        self._burn_origin += per_s * now

    def stop(self, node_id: str, now: float, billed: bool, reason: str) -> None:
        entry = self.open.pop(node_id)
        close_entry(entry, now, billed, reason)
        per_s = float(entry.price_per_hour) / 3600
        self._burn -= per_s
        self._burn_origin -= per_s * entry.started_at
        self._closed_cost += float(entry.cost)
        self.closed.append(entry)
        self._closed_since_views.append(entry)

    def spend_estimate(self, now: float) -> float:
        """Money spent so far (closed as billed, open at their elapsed time): for the plot."""
        return self._closed_cost + self._burn * now - self._burn_origin

    def budget_views(self, now: float) -> tuple[BudgetView, ...]:
        """What the controller's ``budget_views`` would read from a database holding these entries."""
        entries: Iterable[LedgerEntry] = [*self.open.values(), *self._closed_since_views]
        self._closed_since_views = []
        return views_from_entries(self.config, entries, now, self._cache)

    def close_all(self, now: float) -> None:
        for node_id in list(self.open):
            self.stop(node_id, now, True, "end of simulation")

    def total_cost(self) -> Decimal:
        return sum((e.cost or ZERO for e in self.closed), ZERO)

    def node_seconds(self) -> float:
        return sum((e.ended_at or e.started_at) - e.started_at for e in self.closed)

    def slot_seconds(self) -> float:
        return sum(((e.ended_at or e.started_at) - e.started_at) * e.slots for e in self.closed)


class LowerBound:
    """Integrates the offline lower bound's rate over the run's busy-slot timeline."""

    def __init__(self, config: ClusterConfig) -> None:
        self.free_pools = [(frozenset(p.labels), p.max_nodes * p.slots) for p in config.pools if p.price_per_hour == 0]
        self.priced = [(frozenset(p.labels), float(p.price_per_hour) / 3600 / p.slots)
                       for p in config.pools if p.price_per_hour > 0]
        self._cheapest: dict[LabelSet, float] = {}
        self.total = 0.0

    def cheapest(self, labels: LabelSet) -> float:
        if labels not in self._cheapest:
            prices = [price for pool_labels, price in self.priced if labels <= pool_labels]
            self._cheapest[labels] = min(prices, default=0.0)
        return self._cheapest[labels]

    def rate(self, running: dict[LabelSet, int]) -> float:
        """Money per second the cheapest schedule would pay for the tasks running now."""
        room = [cap for _, cap in self.free_pools]
        rate = 0.0
        for labels in sorted(running, key=self.cheapest, reverse=True):  # free slots go to the dearest tasks
            left = running[labels]
            for i, (pool_labels, _) in enumerate(self.free_pools):
                if left and labels <= pool_labels:
                    taken = min(left, room[i])
                    room[i] -= taken
                    left -= taken
            rate += left * self.cheapest(labels)
        return rate
