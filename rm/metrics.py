"""Prometheus gauges for money: each budget's spent, committed, amount and burn rate.

Why only gauges for now: the metrics endpoint comes with the monitoring issue; the values are
kept current every tick on :data:`REGISTRY`, so that endpoint only has to expose it.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Gauge

from policies.snapshot import BudgetView

REGISTRY = CollectorRegistry()
_LABELS = ("cluster", "scope", "currency")
BUDGET_SPENT = Gauge("rm_budget_spent", "money spent in the budget's current period", _LABELS, registry=REGISTRY)
BUDGET_COMMITTED = Gauge("rm_budget_committed", "money the budget's period is already bound to pay", _LABELS,
                         registry=REGISTRY)
BUDGET_REMAINING = Gauge("rm_budget_remaining", "budget amount minus committed (absent without an amount)", _LABELS,
                         registry=REGISTRY)
BUDGET_BURN = Gauge("rm_budget_burn_per_hour", "summed hourly price of the nodes billed now", _LABELS, registry=REGISTRY)


def publish_budgets(cluster: str, views: Iterable[BudgetView]) -> None:
    """Set the gauges from this tick's budget views (floats here are for display only)."""
    for view in views:
        labels = (cluster, view.scope, view.currency)
        BUDGET_SPENT.labels(*labels).set(float(view.spent))
        BUDGET_COMMITTED.labels(*labels).set(float(view.committed))
        BUDGET_BURN.labels(*labels).set(float(view.burn_per_hour))
        if view.amount is not None:
            BUDGET_REMAINING.labels(*labels).set(float(view.amount - view.committed))
