"""The peers, as policies on the same simulator: what users would run instead of ours.

Each baseline reads the same :class:`~policies.snapshot.Snapshot` and answers a
:class:`~policies.decision.Decision`, so the simulator acts on it exactly as on ours; none of
them knows about money (ProActive and the Kubernetes autoscalers cap node counts only), so
their budget breaches are measured, not prevented. Every one fills pools in priority order
(on-prem first) and never exceeds ``max_nodes``; each runs at its documented refresh interval.

- ``proactive``: ProActive's SchedulerLoadingPolicy: load = running + eligible tasks,
  ``ceil(load / loadFactor)`` ProActive nodes (a ProActive node is one execution slot, so that
  many of our slots), refreshed every 10 s, the surplus released in one batch.
- ``ca``: Kubernetes cluster-autoscaler: a scan every 10 s launches nodes for the pending
  (waiting) tasks that do not fit; a node below 50 % use for 10 minutes is removed.
- ``keda``: a KEDA queue-length scaler: queue length only (running tasks are invisible), polled
  every 30 s, scaled down only after a 300 s cooldown.
- ``static``: every pool at ``max_nodes`` all the time.
- ``onprem``: only the free pools, at ``max_nodes``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from policies.decision import Cause, Decision, Drain, Launch
from policies.load_factor import clamp_to_bounds, count_nodes, eligible_pools, merge_demand, pool_rank
from policies.snapshot import NodeView, PolicySettings, PoolView, Snapshot
from rm.simulator import POLICIES
from rm.states import LIVE, NodeStatus

DecideFn = Callable[[Snapshot, PolicySettings, float], Decision]


@dataclass
class Baseline:
    """A named policy with its refresh interval; ``keeps_nodes`` runs never release on their own."""

    name: str
    interval_s: float
    decide: DecideFn
    keeps_nodes: bool = False


def fill_targets(slots_by_labels: dict[frozenset[str], int], pools: tuple[PoolView, ...]) -> dict[str, int]:
    """Node targets per pool: each label set's slots filled pool by pool in priority order, clamped."""
    room = {p.name: p.max_nodes * p.slots for p in pools}
    slots = {p.name: 0 for p in pools}
    for labels, need in sorted(slots_by_labels.items(), key=lambda kv: len(eligible_pools(kv[0], pools))):
        for pool in eligible_pools(labels, pools):
            taken = min(need, room[pool.name])
            slots[pool.name] += taken
            room[pool.name] -= taken
            need -= taken
    return {p.name: clamp_to_bounds(-(-slots[p.name] // p.slots), p) for p in pools}


def towards(pools: tuple[PoolView, ...], targets: dict[str, int], releasable: Callable[[NodeView, float], bool],
            now: float, cause: Cause = Cause.DEMAND) -> Decision:
    """Launch up to each target; release idle surplus nodes that ``releasable`` allows, all at once."""
    launches, drains = [], []
    for pool in sorted(pools, key=pool_rank):
        live = count_nodes(pool, LIVE)
        target = targets.get(pool.name, 0)
        if target > live:
            launches.append(Launch(pool.name, target - live, cause, f"{pool.name}: {live} -> {target} nodes"))
        surplus = live - max(target, pool.min_nodes)
        for node in pool.nodes:
            if surplus <= 0:
                break
            if node.status == NodeStatus.IDLE and releasable(node, now):
                drains.append(Drain(node.id, pool.name, Cause.IDLE, f"{pool.name}: surplus node {node.id} released"))
                surplus -= 1
    return Decision(launches=tuple(launches), drains=tuple(drains))


def proactive(snapshot: Snapshot, settings: PolicySettings, now: float) -> Decision:
    demand = merge_demand(snapshot.demand)
    slots = {labels: math.ceil(load / settings.load_factor) for labels, load in demand.items()}
    return towards(snapshot.pools, fill_targets(slots, snapshot.pools), lambda node, t: True, now)


@dataclass
class ClusterAutoscaler:
    """Scale up for pending tasks that do not fit; scale down nodes under 50 % use for 10 minutes."""

    unneeded_after_s: float = 600.0
    threshold: float = 0.5
    below_since: dict[str, float] = field(default_factory=dict)

    def __call__(self, snapshot: Snapshot, settings: PolicySettings, now: float) -> Decision:
        launches = []
        pending = {d.labels: d.waiting for d in snapshot.demand if d.waiting}
        for labels, waiting in pending.items():
            for pool in eligible_pools(labels, snapshot.pools):
                coming = sum(pool.slots for n in pool.nodes if n.status in
                             (NodeStatus.REQUESTED, NodeStatus.PROVISIONING, NodeStatus.BOOTING))
                room = pool.max_nodes - count_nodes(pool, LIVE)
                want = min(room, -(-max(waiting - coming, 0) // pool.slots))
                if want > 0:
                    launches.append(Launch(pool.name, want, Cause.DEMAND, f"{pool.name}: {want} node(s) for pending tasks"))
                    waiting -= want * pool.slots
                if waiting <= 0:
                    break
        drains = []
        seen = set()
        for pool in snapshot.pools:
            serving = count_nodes(pool, LIVE)
            for node in pool.nodes:
                seen.add(node.id)
                if node.status not in (NodeStatus.IDLE, NodeStatus.BUSY) or node.running_tasks / pool.slots >= self.threshold:
                    self.below_since.pop(node.id, None)
                    continue
                since = self.below_since.setdefault(node.id, now)
                if now - since >= self.unneeded_after_s and node.status == NodeStatus.IDLE and serving > pool.min_nodes \
                        and not pending:
                    drains.append(Drain(node.id, pool.name, Cause.IDLE, f"{node.id} under 50 % use for 10 min"))
                    serving -= 1
        self.below_since = {k: v for k, v in self.below_since.items() if k in seen}
        return Decision(launches=tuple(launches), drains=tuple(drains))


@dataclass
class QueueLengthScaler:
    """KEDA: replicas = ceil(queue length / slots); a scale-down waits out the cooldown."""

    cooldown_s: float = 300.0
    last_wanted: dict[str, float] = field(default_factory=dict)  # pool -> when it last wanted its nodes

    def __call__(self, snapshot: Snapshot, settings: PolicySettings, now: float) -> Decision:
        waiting = {d.labels: d.waiting for d in snapshot.demand if d.waiting}
        targets = fill_targets(waiting, snapshot.pools)
        for pool in snapshot.pools:
            live = count_nodes(pool, LIVE)
            if targets[pool.name] >= live:
                self.last_wanted[pool.name] = now
            elif now - self.last_wanted.get(pool.name, float("-inf")) < self.cooldown_s:
                targets[pool.name] = live
        return towards(snapshot.pools, targets, lambda node, t: True, now)


def static(snapshot: Snapshot, settings: PolicySettings, now: float) -> Decision:
    return towards(snapshot.pools, {p.name: p.max_nodes for p in snapshot.pools}, lambda n, t: False, now)


def onprem_only(snapshot: Snapshot, settings: PolicySettings, now: float) -> Decision:
    targets = {p.name: (p.max_nodes if p.price_per_hour == 0 else 0) for p in snapshot.pools}
    return towards(snapshot.pools, targets, lambda n, t: False, now)


def make_baseline(name: str) -> Baseline:
    """A fresh baseline (the stateful ones keep per-run memory)."""
    if name == "proactive":
        return Baseline("proactive", 10.0, proactive)
    if name == "ca":
        return Baseline("ca", 10.0, ClusterAutoscaler())
    if name == "keda":
        return Baseline("keda", 30.0, QueueLengthScaler())
    if name == "static":
        return Baseline("static", 10.0, static, keeps_nodes=True)
    if name == "onprem":
        return Baseline("onprem", 10.0, onprem_only, keeps_nodes=True)
    raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")


BASELINES = POLICIES[1:]
