"""Concrete scenarios for the load-factor policy: the demo config, labels, min/max, scale-down."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from policies import decide
from policies.decision import Cause, Decision, Drain, Launch, Refusal
from policies.load_factor import clamp_to_bounds
from policies.snapshot import Demand, NodeView, PoolView, Snapshot

NOW = 1_000.0


@dataclass(frozen=True)
class Settings:
    load_factor: float = 1.0
    idle_timeout_s: float = 10.0
    scale_down_ticks: int = 3
    max_launch_per_tick: int = 10
    budget_guard_s: float = 60.0


def onprem(nodes: tuple[NodeView, ...] = (), labels: frozenset[str] = frozenset()) -> PoolView:
    return PoolView("onprem", priority=0, slots=2, min_nodes=1, max_nodes=1, labels=labels, nodes=nodes)


def burst(nodes: tuple[NodeView, ...] = (), min_nodes: int = 0, max_nodes: int = 4) -> PoolView:
    return PoolView("burst", priority=10, slots=2, min_nodes=min_nodes, max_nodes=max_nodes, nodes=nodes)


def node(id: str, pool: str, status: str = "idle", running: int = 0, idle_since: float | None = None,
         streak: int = 0) -> NodeView:
    if status == "idle" and idle_since is None:
        idle_since = NOW - 100.0
    return NodeView(id, pool, status, running_tasks=running, idle_since=idle_since, removal_streak=streak)


def waiting(n: int, *labels: str) -> Demand:
    return Demand(frozenset(labels), waiting=n)


def launches(decision: Decision) -> dict[str, Launch]:
    return {launch.pool: launch for launch in decision.launches}


def targets(decision: Decision) -> dict[str, tuple[int, int, int]]:
    return {t.pool: (t.needed_slots, t.target_nodes, t.serving_nodes) for t in decision.targets}


def causes(decision: Decision) -> list[Cause]:
    return [r.cause for r in decision.refusals]


# --- scale-up ---------------------------------------------------------------------------------


def test_demo_backlog_fills_onprem_first_then_bursts_to_max() -> None:
    snap = Snapshot(pools=(burst(), onprem()), demand=(waiting(41),))
    decision = decide(snap, Settings(), NOW)
    assert targets(decision) == {"onprem": (2, 1, 0), "burst": (8, 4, 0)}
    assert [(l.pool, l.count, l.cause) for l in decision.launches] == [
        ("onprem", 1, Cause.DEMAND), ("burst", 4, Cause.DEMAND)]
    [refusal] = decision.refusals
    assert refusal.cause is Cause.MAX_REACHED and refusal.unmet_slots == 31
    assert "pools onprem, burst are at max_nodes" in refusal.message


def test_demo_backlog_with_onprem_serving_counts_existing_capacity() -> None:
    snap = Snapshot(pools=(onprem((node("on-1", "onprem", "busy", running=2),)), burst((
        node("b-1", "burst", "booting"),))), demand=(waiting(41),))
    decision = decide(snap, Settings(), NOW)
    assert [(l.pool, l.count) for l in decision.launches] == [("burst", 3)]
    message = launches(decision)["burst"].message
    assert message == ("launch 3 node(s) in pool burst: 41 task(s) need 8 slot(s) here at load factor 1.0 "
                       "(2 slots/node), target 4 node(s), serving 1")


def test_small_backlog_stays_on_prem() -> None:
    decision = decide(Snapshot(pools=(onprem(), burst()), demand=(waiting(2),)), Settings(), NOW)
    assert targets(decision) == {"onprem": (2, 1, 0), "burst": (0, 0, 0)}
    assert [l.pool for l in decision.launches] == ["onprem"]
    assert decision.refusals == ()


def test_load_factor_two_halves_slots() -> None:
    snap = Snapshot(pools=(onprem(), burst()), demand=(waiting(10),))
    at_one = targets(decide(snap, Settings(load_factor=1.0), NOW))
    at_two = targets(decide(snap, Settings(load_factor=2.0), NOW))
    assert at_one == {"onprem": (2, 1, 0), "burst": (8, 4, 0)}
    assert at_two == {"onprem": (2, 1, 0), "burst": (3, 2, 0)}


def test_load_factor_rounds_slots_up() -> None:
    snap = Snapshot(pools=(onprem(), burst()), demand=(waiting(7),))
    assert targets(decide(snap, Settings(load_factor=2.0), NOW))["burst"] == (2, 1, 0)


def test_in_flight_tasks_count_as_demand() -> None:
    snap = Snapshot(pools=(onprem(), burst()), demand=(Demand(frozenset(), waiting=0, in_flight=5),))
    assert targets(decide(snap, Settings(), NOW))["burst"] == (3, 2, 0)


def test_onprem_labelled_backlog_never_bursts() -> None:
    snap = Snapshot(pools=(onprem(labels=frozenset({"onprem"})), burst()), demand=(waiting(20, "onprem"),))
    decision = decide(snap, Settings(), NOW)
    assert [l.pool for l in decision.launches] == ["onprem"]
    assert targets(decision)["burst"] == (0, 0, 0)
    [refusal] = decision.refusals
    assert refusal.cause is Cause.MAX_REACHED and refusal.labels == frozenset({"onprem"})
    assert refusal.unmet_slots == 18 and "pool onprem is at max_nodes" in refusal.message


def test_constrained_demand_takes_its_pool_before_flexible_demand() -> None:
    snap = Snapshot(pools=(onprem(labels=frozenset({"onprem"})), burst()),
                    demand=(waiting(8), waiting(2, "onprem")))
    decision = decide(snap, Settings(), NOW)
    assert targets(decision) == {"onprem": (2, 1, 0), "burst": (8, 4, 0)}
    assert decision.refusals == ()


def test_label_no_pool_carries_is_refused() -> None:
    snap = Snapshot(pools=(onprem(), burst()), demand=(waiting(5, "gpu"),))
    decision = decide(snap, Settings(), NOW)
    assert [l.cause for l in decision.launches] == [Cause.MIN_NODES]  # onprem min only
    [refusal] = decision.refusals
    assert refusal == Refusal(Cause.NO_POOL, refusal.message, labels=frozenset({"gpu"}), unmet_slots=5)
    assert "{gpu}" in refusal.message and "no pool carries" in refusal.message


def test_below_min_launches_without_demand() -> None:
    decision = decide(Snapshot(pools=(onprem(), burst(min_nodes=2))), Settings(), NOW)
    assert [(l.pool, l.count, l.cause) for l in decision.launches] == [
        ("onprem", 1, Cause.MIN_NODES), ("burst", 2, Cause.MIN_NODES)]
    assert "min_nodes 2" in launches(decision)["burst"].message


def test_launch_cap_refuses_the_rest() -> None:
    snap = Snapshot(pools=(onprem(), burst()), demand=(waiting(10),))
    decision = decide(snap, Settings(max_launch_per_tick=3), NOW)
    assert launches(decision)["burst"].count == 3
    cap = [r for r in decision.refusals if r.cause is Cause.LAUNCH_CAP]
    assert [(r.pool, r.unmet_slots) for r in cap] == [("burst", 2)]
    assert "max_launch_per_tick" in cap[0].message


def test_draining_nodes_count_against_max() -> None:
    nodes = (node("b-1", "burst", "draining"), node("b-2", "burst", "terminating"),
             node("b-3", "burst", "busy", running=2), node("b-4", "burst", "terminated"))
    snap = Snapshot(pools=(onprem((node("on-1", "onprem", "busy", running=2),)), burst(nodes)),
                    demand=(waiting(20),))
    decision = decide(snap, Settings(), NOW)
    assert targets(decision)["burst"] == (8, 4, 1)
    assert launches(decision)["burst"].count == 1
    [refusal] = [r for r in decision.refusals if r.pool == "burst"]
    assert refusal.cause is Cause.MAX_REACHED and refusal.unmet_slots == 4
    assert "3 live of max_nodes 4" in refusal.message


def test_full_pool_at_max_launches_nothing() -> None:
    nodes = tuple(node(f"b-{i}", "burst", "busy", running=2) for i in range(4))
    decision = decide(Snapshot(pools=(burst(nodes),), demand=(waiting(50),)), Settings(), NOW)
    assert decision.launches == ()
    assert causes(decision) == [Cause.MAX_REACHED]


# --- scale-down -------------------------------------------------------------------------------


@pytest.mark.parametrize("streak, drained", [(0, False), (1, False), (2, True), (5, True)])
def test_idle_node_released_on_the_nth_consecutive_recommendation(streak: int, drained: bool) -> None:
    idle = node("burst-ab12", "burst", "idle", idle_since=NOW - 12.0, streak=streak)
    decision = decide(Snapshot(pools=(burst((idle,)),)), Settings(scale_down_ticks=3), NOW)
    assert decision.removal_candidates == ("burst-ab12",)
    assert [d.node_id for d in decision.drains] == (["burst-ab12"] if drained else [])
    if drained:
        assert decision.drains[0] == Drain("burst-ab12", "burst", Cause.IDLE, (
            f"release node burst-ab12: idle 12.0 s (idle_timeout_s 10), recommended on {streak + 1} "
            "consecutive ticks, pool burst has 1 serving for a target of 0"))
        assert decision.refusals == ()
    else:
        assert causes(decision) == [Cause.SCALE_DOWN_PENDING]


def test_idle_node_counts_ticks_but_is_not_released_before_idle_timeout() -> None:
    idle = node("b-1", "burst", "idle", idle_since=NOW - 9.5, streak=7)
    decision = decide(Snapshot(pools=(burst((idle,)),)), Settings(idle_timeout_s=10.0), NOW)
    # recommended (its consecutive-tick count runs alongside the idle timer) but not drained
    assert decision.removal_candidates == ("b-1",) and decision.drains == ()
    assert not [r for r in decision.refusals if r.cause == Cause.SCALE_DOWN_PENDING]


def test_node_idle_past_timeout_with_enough_ticks_is_released_at_once() -> None:
    """Counting ticks during the idle window: release comes at idle_timeout_s, not ticks later."""
    idle = node("b-1", "burst", "idle", idle_since=NOW - 10.0, streak=2)
    decision = decide(Snapshot(pools=(burst((idle,)),)), Settings(idle_timeout_s=10.0, scale_down_ticks=3), NOW)
    assert [d.node_id for d in decision.drains] == ["b-1"]


def test_a_node_that_is_not_surplus_is_never_recommended() -> None:
    idle = node("b-1", "burst", "idle", idle_since=NOW - 100.0, streak=9)
    demand = (Demand(labels=frozenset(), waiting=2),)
    decision = decide(Snapshot(pools=(burst((idle,)),), demand=demand), Settings(), NOW)
    assert decision.removal_candidates == () and decision.drains == ()


def test_idle_exactly_at_timeout_is_recommended() -> None:
    idle = node("b-1", "burst", "idle", idle_since=NOW - 10.0, streak=2)
    decision = decide(Snapshot(pools=(burst((idle,)),)), Settings(idle_timeout_s=10.0), NOW)
    assert [d.node_id for d in decision.drains] == ["b-1"]


def test_busy_node_never_drained() -> None:
    nodes = (node("b-1", "burst", "busy", running=1, streak=9),
             node("b-2", "burst", "idle", running=1, streak=9),  # a task reserved on an idle node
             node("b-3", "burst", "booting", streak=9))
    decision = decide(Snapshot(pools=(burst(nodes),)), Settings(scale_down_ticks=1), NOW)
    assert decision.drains == () and decision.removal_candidates == ()


def test_min_nodes_respected_on_scale_down() -> None:
    nodes = tuple(node(f"b-{i}", "burst", "idle", idle_since=NOW - 100 + i, streak=5) for i in range(4))
    decision = decide(Snapshot(pools=(burst(nodes, min_nodes=2),)), Settings(), NOW)
    assert targets(decision)["burst"] == (0, 2, 4)
    assert [d.node_id for d in decision.drains] == ["b-0", "b-1"]  # the two longest idle


def test_scale_down_keeps_nodes_demand_still_needs() -> None:
    nodes = tuple(node(f"b-{i}", "burst", "idle", streak=5) for i in range(4))
    decision = decide(Snapshot(pools=(burst(nodes),), demand=(waiting(3),)), Settings(), NOW)
    assert targets(decision)["burst"] == (3, 2, 4)
    assert len(decision.drains) == 2 and decision.launches == ()


def test_onprem_minimum_node_is_never_released() -> None:
    idle = node("on-1", "onprem", "idle", streak=9)
    decision = decide(Snapshot(pools=(onprem((idle,)),)), Settings(scale_down_ticks=1), NOW)
    assert decision.drains == () and decision.removal_candidates == ()


# --- explanations and helpers -----------------------------------------------------------------


def test_every_item_is_a_sentence_naming_its_pool_or_labels() -> None:
    scenarios = [
        Snapshot(pools=(onprem(), burst()), demand=(waiting(41), waiting(3, "gpu"))),
        Snapshot(pools=(onprem(), burst(min_nodes=1))),
        Snapshot(pools=(burst((node("b-1", "burst", "draining"), node("b-2", "burst", "idle", streak=0),
                               node("b-3", "burst", "idle", streak=4))),)),
    ]
    for snap in scenarios:
        decision = decide(snap, Settings(max_launch_per_tick=2), NOW)
        items = [*decision.launches, *decision.drains, *decision.refusals]
        assert items
        for item in items:
            assert item.message == item.message.strip() and len(item.message.split()) >= 5
            pool = getattr(item, "pool", None)
            if pool is not None:
                assert pool in item.message
            else:
                assert "{" + ", ".join(sorted(item.labels)) + "}" in item.message


def test_clamp_to_bounds() -> None:
    pool = burst(min_nodes=1, max_nodes=3)
    assert [clamp_to_bounds(n, pool) for n in range(6)] == [1, 1, 2, 3, 3, 3]


def test_output_is_independent_of_input_order() -> None:
    nodes = (node("b-2", "burst", "idle", streak=4), node("b-1", "burst", "idle", streak=4))
    a = Snapshot(pools=(onprem(), burst(nodes)), demand=(waiting(3, "gpu"), waiting(1, "eu")))
    b = Snapshot(pools=(burst(nodes[::-1]), onprem()), demand=(waiting(1, "eu"), waiting(3, "gpu")))
    assert decide(a, Settings(), NOW) == decide(b, Settings(), NOW)


def test_duplicate_demand_labels_are_merged_before_rounding() -> None:
    snap = Snapshot(pools=(burst(),), demand=(waiting(1), waiting(1)))
    assert targets(decide(snap, Settings(load_factor=2.0), NOW))["burst"] == (1, 1, 0)


def test_a_pool_backing_off_launches_nothing_and_says_how_long() -> None:
    from dataclasses import replace

    waiting = (Demand(labels=frozenset(), waiting=8),)
    backing_off = replace(burst(), launch_backoff_until=NOW + 7)
    decision = decide(Snapshot(pools=(backing_off,), demand=waiting), Settings(), NOW)
    assert decision.launches == ()
    [refusal] = [r for r in decision.refusals if r.cause == Cause.BACKOFF]
    assert refusal.pool == "burst" and "waits 7 s more" in refusal.message and refusal.unmet_slots == 8
    assert [t.target_nodes for t in decision.targets] == [4], "the target still says what demand needs"

    recovered = decide(Snapshot(pools=(replace(burst(), launch_backoff_until=NOW),), demand=waiting), Settings(), NOW)
    assert [(l.pool, l.count) for l in recovered.launches] == [("burst", 4)]


def test_demand_falls_through_a_backing_off_pool_to_the_next_by_priority() -> None:
    from dataclasses import replace

    waiting = (Demand(labels=frozenset(), waiting=6),)
    first = replace(burst(), name="burst-a", priority=10, launch_backoff_until=NOW + 40)
    second = replace(burst(), name="burst-b", priority=20)
    decision = decide(Snapshot(pools=(first, second), demand=waiting), Settings(), NOW)
    assert [(l.pool, l.count) for l in decision.launches] == [("burst-b", 3)]
    [refusal] = [r for r in decision.refusals if r.cause == Cause.BACKOFF]
    assert refusal.pool == "burst-a" and refusal.unmet_slots == 6
    assert "fall through to the next pool" in refusal.message and "40 s more" in refusal.message

    healthy = decide(Snapshot(pools=(replace(first, launch_backoff_until=NOW), second), demand=waiting), Settings(), NOW)
    assert [(l.pool, l.count) for l in healthy.launches] == [("burst-a", 3)], "back to priority order once it recovers"
