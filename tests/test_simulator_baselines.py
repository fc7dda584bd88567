"""The peers as policies: each follows its documented rule, and each runs on the simulator."""

from __future__ import annotations

import pytest

from policies.snapshot import Demand, NodeView, PoolView, Snapshot
from rm.config import PolicyConfig
from rm.simulator.baselines import BASELINES, ClusterAutoscaler, QueueLengthScaler, onprem_only, proactive, static
from rm.simulator.run import simulate
from rm.simulator.workload import make_workload
from tests.sim_support import sim_settings

SETTINGS = PolicyConfig(load_factor=2.0)


def pools(cloud_nodes: tuple[NodeView, ...] = ()) -> tuple[PoolView, ...]:
    return (PoolView(name="onprem", priority=0, slots=4, min_nodes=1, max_nodes=1,
                     nodes=(NodeView("o1", "onprem", "busy", running_tasks=4),)),
            PoolView(name="cloud", priority=10, slots=2, min_nodes=0, max_nodes=10, price_per_hour=1, nodes=cloud_nodes))


def idle(node_id: str, since: float = 0.0) -> NodeView:
    return NodeView(node_id, "cloud", "idle", idle_since=since)


def test_proactive_sizes_on_running_plus_eligible_over_the_load_factor() -> None:
    decision = proactive(Snapshot(pools(), (Demand(frozenset(), waiting=10, in_flight=4),)), SETTINGS, 0.0)
    # ceil(14 / 2) = 7 slots: 4 on-prem, 3 in the cloud = 2 nodes of 2 slots
    assert [(l.pool, l.count) for l in decision.launches] == [("cloud", 2)]


def test_proactive_releases_the_whole_surplus_at_once() -> None:
    nodes = tuple(idle(f"c{i}") for i in range(5))
    decision = proactive(Snapshot(pools(nodes), (Demand(frozenset(), waiting=0, in_flight=4),)), SETTINGS, 0.0)
    assert len(decision.drains) == 5


def test_cluster_autoscaler_waits_ten_minutes_below_half_use() -> None:
    ca = ClusterAutoscaler()
    snapshot = Snapshot(pools((idle("c1"),)), ())
    assert not ca(snapshot, SETTINGS, 0.0).drains
    assert not ca(snapshot, SETTINGS, 599.0).drains
    assert [d.node_id for d in ca(snapshot, SETTINGS, 600.0).drains] == ["c1"]


def test_cluster_autoscaler_launches_only_for_pending_tasks() -> None:
    decision = ClusterAutoscaler()(Snapshot(pools(), (Demand(frozenset(), waiting=3, in_flight=40),)), SETTINGS, 0.0)
    assert [(l.pool, l.count) for l in decision.launches] == [("cloud", 2)], "3 pending tasks, 2 slots a node"


def test_keda_sees_the_queue_only_and_cools_down() -> None:
    keda = QueueLengthScaler()
    busy = tuple(NodeView(f"c{i}", "cloud", "busy", running_tasks=2) for i in range(3))
    running_only = Snapshot(pools(busy), (Demand(frozenset(), waiting=0, in_flight=100),))
    assert not keda(running_only, SETTINGS, 0.0).launches, "running tasks are invisible to a queue-length scaler"
    queued = Snapshot(pools(), (Demand(frozenset(), waiting=8),))
    assert sum(l.count for l in keda(queued, SETTINGS, 0.0).launches) == 2  # 4 on-prem slots taken, 4 left: 2 nodes
    drained = Snapshot(pools((idle("c1"), idle("c2"))), ())
    assert not keda(drained, SETTINGS, 299.0).drains
    assert len(keda(drained, SETTINGS, 300.0).drains) == 2


def test_static_and_onprem_fill_to_max_and_never_release() -> None:
    nothing = Snapshot(pools((idle("c1"),)), ())
    assert [(l.pool, l.count) for l in static(nothing, SETTINGS, 0.0).launches] == [("cloud", 9)]
    assert not static(nothing, SETTINGS, 0.0).drains
    assert not onprem_only(Snapshot(pools(), (Demand(frozenset(), waiting=99),)), SETTINGS, 0.0).launches


@pytest.mark.parametrize("policy", BASELINES)
def test_every_baseline_finishes_the_work_within_max_nodes(policy: str) -> None:
    run = simulate(sim_settings(), make_workload("burst", 300, 3), policy, seed=3)
    assert run.metrics.tasks_done == 300
    assert max(run.timeline.nodes["cloud"]) <= 12
    assert run.metrics.cost_over_bound is None or run.metrics.cost_over_bound >= 1.0
    if policy == "onprem":
        assert run.metrics.total_cost == 0 and max(run.timeline.nodes["cloud"]) == 0


def test_baselines_know_nothing_of_money_and_their_breaches_are_counted() -> None:
    """The burn cap admits 10 cloud nodes at 0.60/h; ProActive's rule launches all 12 and breaches it."""
    settings = sim_settings(budgets={"global": {"period": "month", "amount": "500", "max_burn_per_hour": "6"}})
    workload = make_workload("burst", 600, 1)
    ours = simulate(settings, workload, "default", seed=1).metrics
    theirs = simulate(settings, workload, "proactive", seed=1).metrics
    assert ours.budget_violations == 0 and ours.peak_nodes <= 12
    assert theirs.budget_violations == 1 and theirs.peak_nodes == 14
