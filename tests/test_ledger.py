"""The ledger in the store (SQLite and PostgreSQL): entries open at the launch request and close at
confirmed destruction; budgets and alerts read from it; a restart in the middle changes no total."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from rm.billing import ZERO, cents
from rm.budget import budget_status, budget_views, record_alerts
from rm.config import ClusterConfig, parse_config
from rm.costs import load_report
from rm.ledger import confirm_destroyed, confirm_gone, open_entry
from rm.lifecycle import change_status, create_node
from rm.models import Base, BudgetAlert, LedgerEntry, Node, ScalingEvent
from rm.states import NodeStatus
from rm.store import Store

S = NodeStatus
T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC).timestamp()


def cluster(**budgets: object) -> ClusterConfig:
    return parse_config({
        "cluster": "money", "currency": "EUR",
        "pools": [{"name": "onprem", "provider": "local", "priority": 0},
                  {"name": "burst", "provider": "local", "slots": 2, "price_per_hour": "0.40",
                   "billing": {"granularity": "second", "minimum_s": 60}},
                  {"name": "big", "provider": "local", "price_per_hour": "1.50", "billing": {"granularity": "hour"}}],
        "budgets": budgets,
    })


def launch(store: Store, config: ClusterConfig, node_id: str, pool: str, at: float) -> None:
    """What NodeKeeper.launch does to the store: the node row, its ledger entry, provisioning."""
    with store.session() as session:
        node = Node(id=node_id, cluster="money", pool=pool, provider="local", slots=config.pool(pool).slots, labels=[])
        create_node(session, node, "test launch", at)
        open_entry(session, node, config.pool(pool), config.currency, at)
        change_status(session, node, S.PROVISIONING, "handed to the provider", at)


def walk(store: Store, node_id: str, at: float, *path: NodeStatus) -> None:
    with store.session() as session:
        node = session.get(Node, node_id)
        for status in path:
            change_status(session, node, status, "test", at)


def entry(store: Store, node_id: str) -> LedgerEntry:
    with store.session() as session:
        return session.scalar(select(LedgerEntry).where(LedgerEntry.node_id == node_id))


RUN_TO_TERMINATED = (S.BOOTING, S.IDLE, S.DRAINING, S.TERMINATING, S.TERMINATED)


def test_entries_bill_from_launch_request_to_destruction(store: Store) -> None:
    config = cluster()
    launch(store, config, "b1", "burst", T0)
    assert entry(store, "b1").ended_at is None
    walk(store, "b1", T0 + 1800, *RUN_TO_TERMINATED)
    closed = entry(store, "b1")
    assert (closed.ended_at, closed.billed_s, closed.cost) == (T0 + 1800, 1800, Decimal("0.2"))
    assert closed.price_per_hour == Decimal("0.40")  # exact through the text column, on both databases

    launch(store, config, "b2", "burst", T0)  # a launch the provider refused: no VM, nothing billed
    walk(store, "b2", T0 + 5, S.FAILED)
    assert (entry(store, "b2").billed_s, entry(store, "b2").cost) == (0, Decimal(0))

    launch(store, config, "g1", "big", T0)  # hourly: 10 minutes bill the whole hour
    walk(store, "g1", T0 + 600, *RUN_TO_TERMINATED)
    assert entry(store, "g1").cost == Decimal("1.5")


def test_failed_after_boot_and_lost_nodes_bill_until_destruction_is_confirmed(store: Store) -> None:
    config = cluster()
    launch(store, config, "g1", "big", T0)
    walk(store, "g1", T0 + 300, S.BOOTING, S.FAILED)  # boot timeout: the VM exists until destroyed
    launch(store, config, "b1", "burst", T0)
    walk(store, "b1", T0 + 100, S.BOOTING, S.IDLE, S.LOST)
    assert entry(store, "g1").ended_at is None and entry(store, "b1").ended_at is None
    with store.session() as session:
        confirm_destroyed(session, session.get(Node, "g1"), T0 + 3700)
        confirm_gone(session, "burst", {"b1"}, T0 + 200, T0 + 200)  # still listed: still billed
    assert entry(store, "b1").ended_at is None
    with store.session() as session:
        confirm_gone(session, "burst", set(), T0 + 250, T0 + 260)
    assert (entry(store, "g1").billed_s, entry(store, "g1").cost) == (7200, Decimal("3"))
    assert (entry(store, "b1").billed_s, entry(store, "b1").cost) == (260, Decimal("0.028888889"))  # 0.40 * 260 / 3600


def test_budget_views_and_alerts_once_per_period(store: Store) -> None:
    config = cluster(**{"global": {"period": "month", "amount": "1.90", "alert_thresholds": [0.5, 0.8, 1.0]},
                        "pools": {"burst": {"period": "day", "max_burn_per_hour": 1}}})
    launch(store, config, "g1", "big", T0)  # an hourly node: 1.50 committed at once
    launch(store, config, "b1", "burst", T0 + 60)
    now = T0 + 600
    with store.session() as session:
        views = {v.scope: v for v in budget_views(session, config, now)}
        record_alerts(session, config, tuple(views.values()), now)
    glob = views["global"]
    assert glob.committed == Decimal("1.5") + Decimal("0.40") * 540 / 3600  # b1: 540 s so far, past its 60 s minimum
    assert glob.spent == (Decimal("1.5") * 600 / 3600).quantize(Decimal("1e-9")) + Decimal("0.06")
    assert glob.burn_per_hour == Decimal("1.90")
    assert views["pool burst"].burn_per_hour == Decimal("0.40")
    with store.session() as session:  # a second tick, and a "restarted" reader: no repeated alert
        record_alerts(session, config, tuple(budget_views(session, config, now + 1)), now + 1)
    again = Store(store.url)
    try:
        with again.session() as session:
            record_alerts(session, config, tuple(budget_views(session, config, now + 2)), now + 2)
            alerts = list(session.scalars(select(BudgetAlert.threshold).order_by(BudgetAlert.threshold)))
            events = list(session.scalars(select(ScalingEvent.message).where(ScalingEvent.kind == "budget-alert")))
            status = budget_status(session, config, now + 2)
    finally:
        again.dispose()
    assert alerts == [Decimal("0.5"), Decimal("0.8")]
    assert events[0] == "global budget at 50% of its monthly amount: committed 1.56 EUR of 1.90 EUR"
    [glob_status] = [b for b in status["budgets"] if b["scope"] == "global"]
    assert (glob_status["amount"], glob_status["committed"], glob_status["remaining"]) == ("1.90", "1.56", "0.34")
    assert [a["threshold"] for a in glob_status["alerts"]] == ["0.5", "0.8"]


@given(seed=st.integers(0, 2**32 - 1), restart_at=st.integers(5, 55))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_a_restart_in_the_middle_changes_no_total(store: Store, seed: int, restart_at: int) -> None:
    """Random launches, failures, losses and terminations; the store is closed and reopened part
    way; every report and budget reads the same before and after, and totals equal the ledger."""
    Base.metadata.drop_all(store.engine)  # each example starts from an empty database
    Base.metadata.create_all(store.engine)
    config = cluster(**{"global": {"period": "month", "amount": "100"}})
    rng = random.Random(seed)
    current = store
    live: list[str] = []
    now = T0
    for step in range(60):
        now = T0 + 97 * step
        if step == restart_at:  # the manager restarts: a new engine on the same database
            before = reports(current, config, now)
            current.dispose()
            current = Store(store.url)
            assert reports(current, config, now) == before
        if rng.random() < 0.5 or not live:
            node_id = f"n{step}"
            launch(current, config, node_id, rng.choice(("burst", "big", "onprem")), now)
            live.append(node_id)
            continue
        node_id = live.pop(rng.randrange(len(live)))
        ending = rng.choice(((S.FAILED,), RUN_TO_TERMINATED, (S.BOOTING, S.LOST)))
        walk(current, node_id, now, *ending)
        if ending[-1] == S.LOST:
            with current.session() as session:
                confirm_destroyed(session, session.get(Node, node_id), now + 30)
    try:
        for node_id in live:
            walk(current, node_id, now + 10, *RUN_TO_TERMINATED)
        end = now + 100
        with current.session() as session:
            ledger_sum = sum((e.cost for e in session.scalars(select(LedgerEntry))), ZERO)
        for group_by, report in reports(current, config, end).items():
            if group_by != "budget":
                assert Decimal(report["total"]) == cents(ledger_sum), group_by
                assert sum((Decimal(r["cost"]) for r in report["rows"]), ZERO) == Decimal(report["total"])
    finally:
        if current is not store:
            current.dispose()


def reports(store: Store, config: ClusterConfig, now: float) -> dict[str, object]:
    with store.session() as session:
        out: dict[str, object] = {g: load_report(session, g, T0 - 86400, now + 86400, now, "EUR")
                                  for g in ("pool", "provider", "day", "job", "owner")}
        out["budget"] = budget_status(session, config, now)
    return out


def test_the_controllers_budget_cache_agrees_with_a_full_read_tick_after_tick(store: Store) -> None:
    from rm.budget import BudgetCache, period_bounds
    from rm.ledger import cost_between, entries_between

    config = cluster(**{"global": {"period": "month", "amount": "100"},
                        "pools": {"burst": {"period": "day", "amount": "10"}}})
    rng = random.Random(3)
    cache, live, now = BudgetCache(), [], T0
    for tick in range(40):
        now = T0 + 13 * 3600 + 300 * tick  # from 23:00 UTC: the daily budget turns over midway
        for _ in range(rng.randint(0, 2)):  # launches, some on the previous UTC day's boundary
            node_id = f"n{tick}-{len(live)}"
            launch(store, config, node_id, rng.choice(["burst", "big"]), now - rng.uniform(0, 200))
            live.append(node_id)
        for node_id in [n for n in live if rng.random() < 0.3]:  # some run to the end and are destroyed
            walk(store, node_id, now, *RUN_TO_TERMINATED)
            live.remove(node_id)
        with store.session() as session:
            cached = budget_views(session, config, now, cache)
            for view in cached:  # the reference: every entry of the period read and summed afresh
                start, end = period_bounds(view.period, now)
                entries = [e for e in entries_between(session, start, end) if view.pool in (None, e.pool)]
                assert view.spent == sum((cost_between(e, start, end, now) for e in entries), ZERO), f"tick {tick}"
                assert view.committed == sum((cost_between(e, start, end, now, committed=True) for e in entries),
                                             ZERO), f"tick {tick}"
    assert all(v.spent > ZERO for v in cached)
