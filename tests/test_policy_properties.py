"""Invariants of the load-factor policy over random pools, nodes, demand and settings.

Never above max, never below min, never releasing a busy node, on-prem (low priority number)
first, deterministic: these must hold for every snapshot, not just the examples.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from policies import decide
from policies.decision import Cause, Decision
from policies.load_factor import slots_for, usable_nodes
from policies.snapshot import Demand, NodeView, PoolView, Snapshot
from rm.states import LIVE, SERVING, TERMINAL, NodeStatus

NOW = 10_000.0
LABELS = ("onprem", "gpu", "eu")
LIVE_STATUSES = sorted(LIVE)
TERMINAL_STATUSES = sorted(TERMINAL)


@dataclass(frozen=True)
class Settings:
    load_factor: float
    idle_timeout_s: float
    scale_down_ticks: int
    max_launch_per_tick: int
    budget_guard_s: float = 60.0


# Idle and busy nodes are where scale-down happens: draw them as often as all others together.
live_statuses = st.sampled_from((NodeStatus.IDLE, NodeStatus.BUSY)) | st.sampled_from(LIVE_STATUSES)
label_sets = st.frozensets(st.sampled_from(LABELS))

policy_settings = st.builds(
    Settings,
    load_factor=st.floats(0.5, 4.0, allow_nan=False),
    idle_timeout_s=st.floats(0.0, 60.0, allow_nan=False),
    scale_down_ticks=st.integers(1, 4),
    max_launch_per_tick=st.integers(1, 5),
)


@st.composite
def node_views(draw: st.DrawFn, pool: str, index: int, status: str) -> NodeView:
    idle = status == NodeStatus.IDLE
    idle_since = None
    # Mostly realistic (idle nodes have idle_since and usually no task), sometimes not.
    if draw(st.integers(0, 4)) > 0 if idle else draw(st.integers(0, 4)) == 0:
        idle_since = draw(st.floats(NOW - 120.0, NOW, allow_nan=False))
    running = draw(st.sampled_from((0, 0, 0, 1)) if idle else st.integers(0, 3))
    return NodeView(
        id=f"{pool}-n{index}",
        pool=pool,
        status=status,
        running_tasks=running,
        idle_since=idle_since,
        created_at=draw(st.floats(0.0, NOW, allow_nan=False)),
        removal_streak=draw(st.integers(0, 5)),
    )


@st.composite
def pool_views(draw: st.DrawFn, name: str) -> PoolView:
    max_nodes = draw(st.integers(0, 6))
    live = draw(st.lists(live_statuses, max_size=max_nodes))
    gone = draw(st.lists(st.sampled_from(TERMINAL_STATUSES), max_size=2))
    statuses = draw(st.permutations(live + gone))
    nodes = tuple(draw(node_views(name, i, s)) for i, s in enumerate(statuses))
    return PoolView(
        name=name,
        priority=draw(st.integers(0, 20)),
        slots=draw(st.integers(1, 4)),
        min_nodes=draw(st.integers(0, max_nodes)),
        max_nodes=max_nodes,
        labels=draw(label_sets),
        price_per_hour=draw(st.floats(0.0, 5.0, allow_nan=False)),
        nodes=nodes,
        launch_backoff_until=draw(st.sampled_from((0.0, 0.0, 0.0, NOW, NOW + 30.0))),
    )


@st.composite
def pool_tuples(draw: st.DrawFn) -> tuple[PoolView, ...]:
    count = draw(st.integers(1, 4))
    return tuple(draw(pool_views(f"pool{i}")) for i in range(count))


demands = st.builds(Demand, labels=label_sets, waiting=st.integers(0, 40), in_flight=st.integers(0, 10))

snapshots = st.builds(Snapshot, pools=pool_tuples(), demand=st.tuples() | st.lists(demands, max_size=4).map(tuple))


def count(pool: PoolView, statuses: frozenset[NodeStatus]) -> int:
    return sum(1 for n in pool.nodes if n.status in statuses)


def launched(decision: Decision, pool: str) -> int:
    return sum(l.count for l in decision.launches if l.pool == pool)


PROPERTY = settings(max_examples=300, deadline=None)


@PROPERTY
@given(snapshots, policy_settings)
def test_never_above_max_nodes(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    for pool in snap.pools:
        assert count(pool, LIVE) + launched(decision, pool.name) <= pool.max_nodes


@PROPERTY
@given(snapshots, policy_settings)
def test_a_pool_backing_off_never_launches(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    for pool in snap.pools:
        if pool.launch_backoff_until > NOW:
            assert launched(decision, pool.name) == 0


@PROPERTY
@given(snapshots, policy_settings)
def test_targets_within_bounds(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    assert sorted(t.pool for t in decision.targets) == sorted(p.name for p in snap.pools)
    for target in decision.targets:
        pool = snap.pool(target.pool)
        assert pool.min_nodes <= target.target_nodes <= pool.max_nodes
        assert 0 <= target.needed_slots <= pool.max_nodes * pool.slots
        assert target.serving_nodes == count(pool, SERVING)


@PROPERTY
@given(snapshots, policy_settings)
def test_only_long_idle_nodes_with_enough_recommendations_are_drained(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    nodes = {n.id: n for p in snap.pools for n in p.nodes}
    for drain in decision.drains:
        node = nodes[drain.node_id]
        assert node.pool == drain.pool and drain.cause is Cause.IDLE
        assert node.status == NodeStatus.IDLE and node.running_tasks == 0
        assert node.idle_since is not None and NOW - node.idle_since >= cfg.idle_timeout_s
        assert node.removal_streak + 1 >= cfg.scale_down_ticks


@PROPERTY
@given(snapshots, policy_settings)
def test_never_drains_below_min_nodes(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    drained = Counter(d.pool for d in decision.drains)
    for pool in snap.pools:
        serving = count(pool, SERVING)
        if drained[pool.name]:
            assert serving - drained[pool.name] >= pool.min_nodes
        target = next(t for t in decision.targets if t.pool == pool.name)
        assert serving - drained[pool.name] >= min(serving, target.target_nodes)


@PROPERTY
@given(snapshots, policy_settings)
def test_launches_respect_per_tick_cap(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    assert len({l.pool for l in decision.launches}) == len(decision.launches)
    for launch in decision.launches:
        assert 0 < launch.count <= cfg.max_launch_per_tick
        assert launch.cause in (Cause.DEMAND, Cause.MIN_NODES)


@PROPERTY
@given(pool_tuples(), st.integers(1, 200), policy_settings)
def test_lower_priority_number_fills_first(pools: tuple[PoolView, ...], tasks: int, cfg: Settings) -> None:
    """A pool gets demand only once every healthy pool before it is full; a backing-off pool
    before it offers at least the nodes it already has."""
    snap = Snapshot(pools=pools, demand=(Demand(frozenset(), waiting=tasks),))
    needed = {t.pool: t.needed_slots for t in decide(snap, cfg, NOW).targets}
    for pool in pools:
        if needed[pool.name] > 0:
            for other in pools:
                if other.priority < pool.priority:
                    full = usable_nodes(other, NOW) * other.slots
                    assert needed[other.name] >= full
                    if other.launch_backoff_until <= NOW:
                        assert needed[other.name] == other.max_nodes * other.slots


@PROPERTY
@given(pool_tuples(), st.integers(1, 200), policy_settings)
def test_demand_falls_through_a_backing_off_pool(pools: tuple[PoolView, ...], tasks: int, cfg: Settings) -> None:
    """A backing-off pool is sized beyond its nodes only for demand no healthy pool can take."""
    snap = Snapshot(pools=pools, demand=(Demand(frozenset(), waiting=tasks),))
    decision = decide(snap, cfg, NOW)
    needed = {t.pool: t.needed_slots for t in decision.targets}
    healthy_room = sum(p.max_nodes * p.slots - needed[p.name] for p in pools if p.launch_backoff_until <= NOW)
    for pool in pools:
        if pool.launch_backoff_until > NOW and needed[pool.name] > usable_nodes(pool, NOW) * pool.slots:
            assert healthy_room == 0, "demand stayed on a backing-off pool while a healthy pool had room"


@PROPERTY
@given(snapshots, policy_settings)
def test_demand_launch_only_where_some_demand_fits(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    for launch in decision.launches:
        if launch.cause is Cause.DEMAND:
            labels = snap.pool(launch.pool).labels
            assert any(d.total > 0 and d.labels <= labels for d in snap.demand)


@PROPERTY
@given(snapshots, policy_settings)
def test_deterministic(snap: Snapshot, cfg: Settings) -> None:
    assert decide(snap, cfg, NOW) == decide(snap, cfg, NOW)
    shuffled = Snapshot(pools=snap.pools[::-1], demand=snap.demand[::-1])
    assert decide(shuffled, cfg, NOW) == decide(snap, cfg, NOW)


@PROPERTY
@given(snapshots, policy_settings)
def test_drains_unique_and_recommended(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    drained = [d.node_id for d in decision.drains]
    assert len(drained) == len(set(drained))
    assert len(decision.removal_candidates) == len(set(decision.removal_candidates))
    assert set(drained) <= set(decision.removal_candidates)


@PROPERTY
@given(snapshots, policy_settings)
def test_demand_slots_are_placed_or_refused(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    totals: Counter = Counter()
    for d in snap.demand:
        totals[d.labels] += d.total
    wanted = sum(slots_for(n, cfg.load_factor) for n in totals.values() if n > 0)
    placed = sum(t.needed_slots for t in decision.targets)
    unmet = sum(r.unmet_slots for r in decision.refusals if r.pool is None)
    assert placed + unmet == wanted


@PROPERTY
@given(snapshots, policy_settings)
def test_every_item_explained(snap: Snapshot, cfg: Settings) -> None:
    decision = decide(snap, cfg, NOW)
    for item in (*decision.launches, *decision.drains, *decision.refusals):
        assert len(item.message.split()) >= 5
        pool = item.pool
        if pool is not None:
            assert pool in item.message
        else:
            assert "{" + ", ".join(sorted(item.labels)) + "}" in item.message
