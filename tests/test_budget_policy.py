"""The budget in the pure policy: examples with their sentences, and properties over random
snapshots and random runs (demand, boot delays, prices, billing granularities, launch failures).

Properties: a launch never makes the committed spend pass a cap (period amount or burn rate);
hard-cap drains never touch a busy node unless ``hard_stop``, nor a free pool; report totals equal
the sum of the ledger entries, and the rows add up to the total exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from policies import decide
from policies.decision import Cause
from policies.snapshot import BudgetView, Demand, NodeView, PoolView, Snapshot
from rm.billing import ZERO, cents
from rm.budget import ClosedShare, ConfiguredBudget, _view, period_bounds
from rm.config import BudgetConfig
from rm.costs import cost_report
from rm.ledger import close_entry
from rm.models import LedgerEntry
from rm.states import NodeStatus
from tests.test_policy import Settings as PolicyKnobs

S = NodeStatus
NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC).timestamp()


def Settings(**knobs: object) -> PolicyKnobs:  # noqa: N802 - reads like the dataclass it builds
    """The policy knobs of tests/test_policy.py, releasing after one tick of a minute's idleness."""
    return PolicyKnobs(**{"idle_timeout_s": 60.0, "scale_down_ticks": 1, **knobs})


def burst(nodes: tuple[NodeView, ...] = (), price: str = "0.40", unit: int = 3600, **kw: object) -> PoolView:
    return PoolView(name="burst", priority=10, slots=2, min_nodes=0, max_nodes=10, price_per_hour=Decimal(price),
                    billing_unit_s=unit, nodes=nodes, **kw)


ONPREM = PoolView(name="onprem", priority=0, slots=2, min_nodes=0, max_nodes=1)


def monthly(amount: str, committed: str = "0", spent: str = "0", **kw: object) -> BudgetView:
    return BudgetView(scope="global", pool=None, currency="EUR", period="month", amount=Decimal(amount),
                      committed=Decimal(committed), spent=Decimal(spent), **kw)


def test_launch_stops_exactly_at_the_cap_and_says_why() -> None:
    snapshot = Snapshot(pools=(ONPREM, burst()), demand=(Demand(frozenset(), 40),),
                        budgets=(monthly("10.00", committed="9.20"),))
    decision = decide(snapshot, Settings(), NOW)
    assert [(launch.pool, launch.count) for launch in decision.launches] == [("onprem", 1), ("burst", 2)]
    refusal = next(r for r in decision.refusals if r.cause is Cause.BUDGET)
    assert refusal.message == ("launch of 8 node(s) in pool burst refused: committed 10.00 EUR + 0.40 EUR minimum "
                               "unit would pass the monthly budget 10.00 EUR (global budget)")
    assert refusal.pool == "burst" and refusal.unmet_slots == 16


def test_the_issue_sentence_for_one_node() -> None:
    at_cap = Snapshot(pools=(burst(),), demand=(Demand(frozenset(), 1),), budgets=(monthly("10.00", "9.60"),))
    assert [launch.count for launch in decide(at_cap, Settings(), NOW).launches] == [1]  # reaching the cap is allowed
    snapshot = replace(at_cap, budgets=(monthly("10.00", "9.70"),))
    [refusal] = [r for r in decide(snapshot, Settings(), NOW).refusals if r.cause is Cause.BUDGET]
    assert refusal.message == ("launch of 1 node(s) in pool burst refused: committed 9.70 EUR + 0.40 EUR minimum "
                               "unit would pass the monthly budget 10.00 EUR (global budget)")


def test_burn_rate_cap_and_pool_budget() -> None:
    pool_budget = BudgetView(scope="pool burst", pool="burst", currency="EUR", period="day",
                             max_burn_per_hour=Decimal("1.00"), burn_per_hour=Decimal("0.40"))
    snapshot = Snapshot(pools=(ONPREM, burst()), demand=(Demand(frozenset(), 20),), budgets=(pool_budget,))
    decision = decide(snapshot, Settings(), NOW)
    assert [(launch.pool, launch.count) for launch in decision.launches] == [("onprem", 1), ("burst", 1)]
    [refusal] = [r for r in decision.refusals if r.cause is Cause.BURN_RATE]
    assert "burn rate 0.80 EUR/h + 0.40 EUR/h would pass max_burn_per_hour 1.00 EUR/h (pool burst budget)" in refusal.message


def test_free_pools_are_never_refused_for_money() -> None:
    snapshot = Snapshot(pools=(ONPREM,), demand=(Demand(frozenset(), 2),), budgets=(monthly("0", "5"),))
    assert [(launch.pool, launch.count) for launch in decide(snapshot, Settings(), NOW).launches] == [("onprem", 1)]


def test_hard_cap_drains_idle_priced_nodes_only() -> None:
    nodes = (NodeView("b-idle", "burst", S.IDLE, idle_since=NOW - 1, created_at=NOW - 100),
             NodeView("b-busy", "burst", S.BUSY, running_tasks=1, created_at=NOW - 100),
             NodeView("b-boot", "burst", S.BOOTING, created_at=NOW - 1))
    onprem = replace(ONPREM, nodes=(NodeView("o-idle", "onprem", S.IDLE, idle_since=NOW - 1000),))
    demand = (Demand(frozenset(), 2),)
    soft = decide(Snapshot((onprem, burst(nodes)), demand, (monthly("5", "5.20", spent="5.00"),)), Settings(), NOW)
    assert [(d.node_id, d.cause, d.force) for d in soft.drains] == [("b-idle", Cause.HARD_CAP, False)]
    assert "spent 5.00 EUR reached the monthly budget 5.00 EUR (global budget); draining it" in soft.drains[0].message
    hard = decide(Snapshot((onprem, burst(nodes)), demand, (monthly("5", "5.2", spent="5.1", hard_stop=True),)),
                  Settings(), NOW)
    assert [(d.node_id, d.force) for d in hard.drains] == [("b-busy", True), ("b-idle", False)]
    assert not hard.launches or all(launch.pool == "onprem" for launch in hard.launches)


def test_the_guard_stops_nodes_before_a_new_paid_hour_would_pass_the_budget() -> None:
    """Hourly nodes 30 s from the end of their first hour, 1.20 EUR committed of a 1.50 EUR budget:
    one more hour (0.40) still fits, the others would pass it, so they stop before the hour begins."""
    nodes = (NodeView("b-old", "burst", S.IDLE, idle_since=NOW - 5, created_at=NOW - 3570),
             NodeView("b-busy", "burst", S.BUSY, running_tasks=1, created_at=NOW - 3560),
             NodeView("b-idle", "burst", S.IDLE, idle_since=NOW - 5, created_at=NOW - 3550),
             NodeView("b-young", "burst", S.IDLE, idle_since=NOW - 5, created_at=NOW - 600))
    demand = (Demand(frozenset(), 20),)
    soft = decide(Snapshot((ONPREM, burst(nodes)), demand, (monthly("1.50", committed="1.60"),)), Settings(), NOW)
    # committed is already past: the busy node runs on (no hard_stop), every idle one due a new hour stops
    assert [(d.node_id, d.force) for d in soft.drains] == [("b-idle", False), ("b-old", False)]
    assert soft.drains[1].message == ("node b-old in pool burst: its next 60 s would commit 0.40 EUR more, past the "
                                      "monthly budget 1.50 EUR (committed 1.60 EUR) (global budget); draining it")
    assert not [launch for launch in soft.launches if launch.pool == "burst"], "no room: no launch"
    room = decide(Snapshot((ONPREM, burst(nodes)), demand, (monthly("2.00", committed="1.60"),)), Settings(), NOW)
    assert [d.node_id for d in room.drains] == ["b-idle", "b-old"], "the busy node's next hour takes the room"
    hard = decide(Snapshot((ONPREM, burst(nodes)), demand, (monthly("2.00", committed="1.60", hard_stop=True),)),
                  Settings(), NOW)
    assert [(d.node_id, d.force) for d in hard.drains] == [("b-idle", False), ("b-old", False)]
    hard = decide(Snapshot((ONPREM, burst(nodes)), demand, (monthly("1.90", committed="1.60", hard_stop=True),)),
                  Settings(), NOW)
    assert [(d.node_id, d.force) for d in hard.drains] == [("b-busy", True), ("b-idle", False), ("b-old", False)]
    assert "destroying it and its running tasks (hard_stop)" in hard.drains[0].message
    assert all(d.node_id != "b-young" for d in hard.drains), "3000 s of its hour are paid: nothing new to commit"


def test_billing_aware_release_keeps_a_node_until_its_paid_hour_ends() -> None:
    def idle_node(age_s: float) -> NodeView:
        return NodeView("b1", "burst", S.IDLE, idle_since=NOW - 300, created_at=NOW - age_s, removal_streak=5)

    early = decide(Snapshot((burst((idle_node(600),), release_before_end_s=120),)), Settings(), NOW)
    assert not early.drains and early.removal_candidates == ("b1",)
    [kept] = [r for r in early.refusals if r.cause is Cause.PAID_TIME]
    assert kept.message == "node b1 in pool burst kept: 3000 s of its paid time left; released within 120 s of its end"
    late = decide(Snapshot((burst((idle_node(3500),), release_before_end_s=120),)), Settings(), NOW)
    assert [d.node_id for d in late.drains] == ["b1"]
    per_second = decide(Snapshot((burst((idle_node(600),), unit=1, release_before_end_s=120),)), Settings(), NOW)
    assert [d.node_id for d in per_second.drains] == ["b1"]


# -- properties over random snapshots ----------------------------------------------------------
money = st.decimals(min_value=0, max_value=20, places=2)


@st.composite
def priced_pool(draw: st.DrawFn, name: str, priority: int) -> PoolView:
    count = draw(st.integers(0, 4))
    nodes = tuple(NodeView(f"{name}-{i}", name, draw(st.sampled_from((S.IDLE, S.BUSY, S.BOOTING, S.REQUESTED))),
                           running_tasks=draw(st.integers(0, 2)), idle_since=NOW - draw(st.floats(0, 500)),
                           created_at=NOW - draw(st.floats(0, 8000)), removal_streak=draw(st.integers(0, 3)))
                  for i in range(count))
    return PoolView(name=name, priority=priority, slots=draw(st.integers(1, 4)), min_nodes=draw(st.integers(0, 2)),
                    max_nodes=draw(st.integers(2, 8)), price_per_hour=draw(money),
                    billing_unit_s=draw(st.sampled_from((1, 60, 3600))), billing_minimum_s=draw(st.sampled_from((0, 60, 600))),
                    nodes=nodes, release_before_end_s=draw(st.sampled_from((0.0, 120.0))))


@st.composite
def budget_views(draw: st.DrawFn, pools: tuple[PoolView, ...]) -> tuple[BudgetView, ...]:
    views = []
    for pool in (None, *(p.name for p in pools)):
        if draw(st.booleans()):
            continue
        amount = draw(st.none() | money)
        burn_cap = draw(st.none() | money)
        views.append(BudgetView(scope="global" if pool is None else f"pool {pool}", pool=pool, currency="EUR",
                                period=draw(st.sampled_from(("day", "month"))), amount=amount, max_burn_per_hour=burn_cap,
                                spent=draw(money), committed=draw(money), burn_per_hour=draw(money),
                                hard_stop=draw(st.booleans())))
    return tuple(views)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    pools = tuple(draw(priced_pool(f"p{i}", i)) for i in range(draw(st.integers(1, 3))))
    demand = (Demand(frozenset(), draw(st.integers(0, 60))),)
    return Snapshot(pools=pools, demand=demand, budgets=draw(budget_views(pools)))


@given(snapshot=snapshots(), max_launch=st.integers(1, 6))
@settings(max_examples=300, deadline=None)
def test_launches_never_pass_a_cap(snapshot: Snapshot, max_launch: int) -> None:
    decision = decide(snapshot, Settings(max_launch_per_tick=max_launch), NOW)
    for budget in snapshot.budgets:
        covered = [(snapshot.pool(launch.pool).billing, launch.count) for launch in decision.launches
                   if budget.covers(launch.pool)]
        unit_cost = sum((rule.smallest_charge * n for rule, n in covered), ZERO)
        burn = sum((rule.price_per_hour * n for rule, n in covered), ZERO)
        if unit_cost > 0 and budget.amount is not None:
            assert budget.committed + unit_cost <= budget.amount
        if burn > 0 and budget.max_burn_per_hour is not None:
            assert budget.burn_per_hour + burn <= budget.max_burn_per_hour


@given(snapshot=snapshots())
@settings(max_examples=300, deadline=None)
def test_hard_cap_drains_spare_busy_nodes_and_free_pools(snapshot: Snapshot) -> None:
    decision = decide(snapshot, Settings(), NOW)
    nodes = {node.id: (pool, node) for pool in snapshot.pools for node in pool.nodes}
    for drain in decision.drains:
        pool, node = nodes[drain.node_id]
        assert node.status in (S.IDLE, S.BUSY)
        if drain.cause is Cause.HARD_CAP:
            assert pool.billing.price_per_hour > 0
            stoppers = [b for b in snapshot.budgets if b.amount is not None and b.covers(pool.name) and b.hard_stop]
            busy = node.status == S.BUSY or node.running_tasks > 0
            assert not busy or (stoppers and drain.force)
        else:
            assert node.status == S.IDLE and node.running_tasks == 0 and not drain.force


# -- properties over random runs ---------------------------------------------------------------
@dataclass
class SimNode:
    view: NodeView
    entry: LedgerEntry
    ready_at: float
    fails: bool


@given(seed=st.integers(0, 2**32 - 1), price=st.decimals(min_value=Decimal("0.01"), max_value=5, places=2),
       unit=st.sampled_from((1, 60, 3600)), minimum=st.sampled_from((0, 60, 900)),
       amount=st.decimals(min_value=0, max_value=6, places=2), burn=st.none() | st.decimals(0, 10, places=1),
       failure_rate=st.sampled_from((0.0, 0.2, 0.6)), boot_s=st.sampled_from((0, 30, 120, 400)))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_random_runs_never_launch_past_the_cap(seed: int, price: Decimal, unit: int, minimum: int, amount: Decimal,
                                                burn: Decimal | None, failure_rate: float, boot_s: int) -> None:
    """Drive the real policy and the real ledger arithmetic through a run of 40 ticks of 60 s."""
    rng = random.Random(seed)
    budget = ConfiguredBudget("global", None, BudgetConfig(period="month", amount=amount, max_burn_per_hour=burn))
    pool = PoolView(name="burst", priority=10, slots=2, min_nodes=0, max_nodes=6, price_per_hour=price,
                    billing_unit_s=unit, billing_minimum_s=minimum, release_before_end_s=120.0)
    nodes: list[SimNode] = []
    entries: list[LedgerEntry] = []
    now = NOW
    for tick in range(40):
        now = NOW + 60 * tick
        for node in nodes:  # boots complete or fail; launch failures bill nothing
            if node.view.status == S.BOOTING and now >= node.ready_at:
                if node.fails:
                    node.view = replace(node.view, status=S.FAILED)
                    close_entry(node.entry, now, False, "launch failed")
                else:
                    node.view = replace(node.view, status=S.IDLE, idle_since=now)
        live = tuple(n.view for n in nodes if n.view.status not in (S.FAILED, S.TERMINATED))
        view = _view(budget, "EUR", entries, period_bounds("month", now), ClosedShare(), now)
        snapshot = Snapshot((replace(pool, nodes=live),), (Demand(frozenset(), rng.choice((0, 0, 3, 12))),), (view,))
        decision = decide(snapshot, Settings(idle_timeout_s=60), now)
        for launch in decision.launches:
            cost = launch.count * pool.billing.smallest_charge
            assert view.committed + cost <= amount, (view, launch)
            if burn is not None:
                assert view.burn_per_hour + launch.count * price <= burn
            for _ in range(launch.count):
                entry = LedgerEntry(node_id=f"n{len(nodes)}", pool="burst", provider="local", currency="EUR",
                                    price_per_hour=price, unit_s=unit, minimum_s=minimum, slots=2, started_at=now)
                entries.append(entry)
                nodes.append(SimNode(NodeView(entry.node_id, "burst", S.BOOTING, created_at=now), entry,
                                     now + boot_s, rng.random() < failure_rate))
        for drain in decision.drains:  # destroyed within the tick
            node = next(n for n in nodes if n.view.id == drain.node_id)
            node.view = replace(node.view, status=S.TERMINATED)
            close_entry(node.entry, now + 5, True, "drained")
    for node in nodes:
        if node.entry.ended_at is None:
            close_entry(node.entry, now + 60, True, "end of run")
    ledger_sum = sum((e.cost for e in entries), ZERO)
    for group_by in ("pool", "day", "job"):
        report = cost_report(group_by, entries, [], {}, NOW - 86400, now + 86400, now + 120, "EUR")
        assert Decimal(report["total"]) == cents(ledger_sum)
        assert sum((Decimal(r["cost"]) for r in report["rows"]), ZERO) == Decimal(report["total"])
