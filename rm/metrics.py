"""Prometheus metrics on one registry, exposed by ``GET /metrics``.

Why one private registry (not the process default): several runtimes share a test process, and
the endpoint should show the manager's figures only. The controller sets the gauges once a tick
(:func:`publish_tick`, :func:`publish_budgets`); :func:`count_event` counts every recorded event,
so launches, failures, refusals and drains are counted where they are explained.
"""

from __future__ import annotations

from collections.abc import Iterable

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from policies.snapshot import BudgetView
from rm.states import LIVE, SERVING

STATES = sorted(str(s) for s in LIVE)
SERVING_STATES = sorted(str(s) for s in SERVING)

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


NODES = Gauge("rm_nodes", "live nodes by pool and state", ("cluster", "pool", "state"), registry=REGISTRY)
DEMAND = Gauge("rm_demand_tasks", "tasks waiting or in flight, by label set", ("cluster", "labels", "kind"),
               registry=REGISTRY)
SLOTS = Gauge("rm_pool_slots", "slots of the pool's serving nodes (capacity)", ("cluster", "pool"), registry=REGISTRY)
NEEDED_SLOTS = Gauge("rm_pool_needed_slots", "slots the policy assigned to the pool this tick", ("cluster", "pool"),
                     registry=REGISTRY)
TARGET = Gauge("rm_pool_target_nodes", "the policy's node target for the pool", ("cluster", "pool"), registry=REGISTRY)
MAX_NODES = Gauge("rm_pool_max_nodes", "the pool's max_nodes now (policy edits show here)", ("cluster", "pool"),
                  registry=REGISTRY)
LAUNCHED = Counter("rm_nodes_launched", "nodes whose launch the policy decided", ("cluster", "pool"), registry=REGISTRY)
EVENTS = Counter("rm_events", "recorded events by kind and cause (launch-failed: failures)", ("kind", "cause", "pool"),
                 registry=REGISTRY)
DECISION = Histogram("rm_decision_seconds", "time the pure policy took to decide", ("cluster",), registry=REGISTRY,
                     buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
TICK = Histogram("rm_tick_seconds", "duration of a controller tick (observe, decide, act)", ("cluster",),
                 registry=REGISTRY, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
LEADER = Gauge("rm_leader", "1 while this instance is the cluster's leader (it acts), 0 while it stands by",
               ("cluster", "instance"), registry=REGISTRY)


ENROL_REFUSALS = Counter("rm_enrol_refusals", "enrolment attempts refused, by reason (throttled: answered 429)",
                         ("reason",), registry=REGISTRY)


def count_event(kind: str, cause: str, pool: str | None) -> None:
    EVENTS.labels(kind, cause, pool or "").inc()


def publish_tick(config: Any, report: Any, decide_s: float) -> None:
    """Set the per-tick gauges from a ``TickReport`` and the config the tick used."""
    cluster = config.cluster
    for pool in config.pools:
        counts = report.nodes_by_pool.get(pool.name, {})
        for state in STATES:
            NODES.labels(cluster, pool.name, state).set(counts.get(state, 0))
        serving = sum(counts.get(state, 0) for state in SERVING_STATES)
        SLOTS.labels(cluster, pool.name).set(serving * pool.slots)
        MAX_NODES.labels(cluster, pool.name).set(pool.max_nodes)
    for target in report.decision.targets:
        NEEDED_SLOTS.labels(cluster, target.pool).set(target.needed_slots)
        TARGET.labels(cluster, target.pool).set(target.target_nodes)
    for launch in report.decision.launches:
        LAUNCHED.labels(cluster, launch.pool).inc(launch.count)
    for entry in report.demand:
        labels = ",".join(sorted(entry.labels))
        DEMAND.labels(cluster, labels, "waiting").set(entry.waiting)
        DEMAND.labels(cluster, labels, "in_flight").set(entry.in_flight)
    DECISION.labels(cluster).observe(decide_s)
    TICK.labels(cluster).observe(report.duration_s)
