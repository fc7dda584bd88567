"""The load-factor scaling policy: eager scale-up, cautious scale-down.

Why a pure function: the controller observes pools, nodes and demand once per tick and
hands them over as a :class:`Snapshot`; :func:`decide` answers with launches, drains and
refusals and never touches the clock, the store or a provider. The same snapshot gives the
same :class:`Decision`, so the policy is tested with hypothesis and replayed by the simulator.

The steps, in ProActive's load-factor semantics:

1. Each demand label set needs ``ceil(tasks / load_factor)`` slots.
2. Slots are filled most-constrained demand first, pool by pool in priority order, each
   pool holding at most ``max_nodes * slots`` slots; a pool backing off after failed launches
   offers only the nodes it has, so demand falls through to the next pool. Leftovers are
   refused with a reason.
3. Each pool's node target is its filled slots in nodes, clamped to ``[min_nodes,
   max_nodes]`` in :func:`clamp_to_bounds` and nowhere else.
4. Below target, launch (capped per tick, never above ``max_nodes`` counting every live node),
   unless the pool is backing off after failed launches.
5. Above target, recommend surplus idle nodes on every tick; release one only once it has been
   idle ``idle_timeout_s`` and recommended on ``scale_down_ticks`` consecutive ticks, and (for a
   priced pool) once its paid time is nearly over.
6. Money (:mod:`policies.budget`): launches are trimmed to what the budgets allow, and at a
   budget's hard cap the priced pools' idle nodes are drained.
7. Bursting windows: a pool outside its windows offers only its busy nodes (the mechanism a
   backing-off pool uses, minus the second pass), so its demand falls through to the next pool;
   it launches nothing, not even for ``min_nodes``, and its idle nodes are drained at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from policies.budget import BudgetGate, hard_cap_drains, paid_time_refusal
from policies.decision import Cause, Decision, Drain, Launch, PoolTarget, Refusal
from policies.snapshot import Demand, LabelSet, NodeView, PolicySettings, PoolView, Snapshot
from rm.states import LIVE, SERVING, NodeStatus

__all__ = ["clamp_to_bounds", "decide"]


@dataclass(frozen=True)
class _PoolPlan:
    """What step 3 worked out for one pool; the numbers every later message quotes."""

    pool: PoolView
    tasks: int  # tasks whose labels this pool carries (for explanation only)
    allocated_slots: int
    demand_nodes: int
    target: int
    serving: int
    live: int


def pool_rank(pool: PoolView) -> tuple[int, str]:
    """Lower priority number first (on-prem before cloud); the name breaks ties stably."""
    return (pool.priority, pool.name)


def format_labels(labels: LabelSet) -> str:
    """Render a label set the same way in every message, sorted so sentences are stable."""
    return "{" + ", ".join(sorted(labels)) + "}"


def slots_for(tasks: int, load_factor: float) -> int:
    """``ceil(tasks / load_factor)``, rounded first so 3 / 0.1 does not become 31 slots."""
    return math.ceil(round(tasks / load_factor, 9))


def nodes_for(slots: int, slots_per_node: int) -> int:
    """Whole nodes needed to hold ``slots``."""
    return -(-slots // slots_per_node)


def clamp_to_bounds(nodes: int, pool: PoolView) -> int:
    """The one place a node count is clamped to ``[min_nodes, max_nodes]`` (Dask's rule)."""
    return max(pool.min_nodes, min(nodes, pool.max_nodes))


def count_nodes(pool: PoolView, statuses: frozenset[NodeStatus]) -> int:
    """Nodes of ``pool`` whose status is one of ``statuses``."""
    return sum(1 for node in pool.nodes if node.status in statuses)


def merge_demand(demand: Iterable[Demand]) -> dict[LabelSet, int]:
    """Sum tasks per label set: two entries with the same labels are one need, ceiled once."""
    merged: dict[LabelSet, int] = {}
    for entry in demand:
        if entry.total > 0:
            merged[entry.labels] = merged.get(entry.labels, 0) + entry.total
    return merged


def eligible_pools(labels: LabelSet, pools: Iterable[PoolView]) -> list[PoolView]:
    """Pools carrying every label the tasks ask for, in the order they are filled."""
    return sorted((p for p in pools if labels <= p.labels), key=pool_rank)


def fill_order(labels: LabelSet, eligible: list[PoolView]) -> tuple[int, int, tuple[str, ...]]:
    """Most constrained first, so flexible demand does not take the only slots a picky one fits."""
    return (len(eligible), -len(labels), tuple(sorted(labels)))


def no_pool_refusal(labels: LabelSet, slots: int) -> Refusal:
    """Explain demand no pool can ever serve: the labels are a config or job mistake."""
    message = (
        f"{slots} slot(s) of demand for labels {format_labels(labels)} unmet: "
        f"no pool carries labels {format_labels(labels)}"
    )
    return Refusal(Cause.NO_POOL, message, labels=labels, unmet_slots=slots)


def max_reached_refusal(labels: LabelSet, slots: int, pools: list[PoolView]) -> Refusal:
    """Explain demand left over once every eligible pool is full up to max_nodes."""
    names = ", ".join(p.name for p in pools)
    verb = "is" if len(pools) == 1 else "are"
    noun = "pool" if len(pools) == 1 else "pools"
    message = (
        f"{slots} slot(s) of demand for labels {format_labels(labels)} unmet: "
        f"{noun} {names} {verb} at max_nodes"
    )
    return Refusal(Cause.MAX_REACHED, message, labels=labels, unmet_slots=slots)


def backing_off(pool: PoolView, now: float) -> bool:
    """The pool's recent launches failed: it keeps its nodes but may not launch before its time."""
    return pool.launch_backoff_until > now


def busy_nodes(pool: PoolView) -> int:
    """Nodes running something: they keep serving the tasks they hold until those finish."""
    return sum(1 for node in pool.nodes if node.status in SERVING and node.running_tasks > 0)


def usable_nodes(pool: PoolView, now: float) -> int:
    """Nodes a pool can offer this tick: ``max_nodes``; only those it has while it backs off;
    only its busy ones outside its bursting windows (its idle ones are being released)."""
    if not pool.window_open:
        return min(busy_nodes(pool), pool.max_nodes)
    return min(count_nodes(pool, SERVING), pool.max_nodes) if backing_off(pool, now) else pool.max_nodes


def window_fall_through(pool: PoolView, labels: LabelSet, slots: int) -> Refusal:
    """Explain demand sent past a pool outside its bursting windows."""
    message = (f"pool {pool.name} is outside its bursting windows: {slots} slot(s) of demand for labels "
               f"{format_labels(labels)} fall through to the next pool(s) by priority")
    return Refusal(Cause.WINDOW, message, pool=pool.name, labels=labels, unmet_slots=slots)


def fall_through_refusal(pool: PoolView, labels: LabelSet, slots: int, now: float) -> Refusal:
    """Explain demand sent past a backing-off pool to the next pools by priority."""
    message = (
        f"pool {pool.name} is backing off after failed launches ({pool.launch_backoff_until - now:.0f} s more): "
        f"{slots} slot(s) of demand for labels {format_labels(labels)} fall through to the next pool(s) by priority"
    )
    return Refusal(Cause.BACKOFF, message, pool=pool.name, labels=labels, unmet_slots=slots)


def allocate(
    pools: tuple[PoolView, ...], needs: dict[LabelSet, int], now: float = 0.0
) -> tuple[dict[str, int], list[Refusal]]:
    """Fill slot needs into pools by priority; return slots per pool and what stayed unmet.

    Two passes per label set: first every pool offers what it can use now (a backing-off pool
    only the nodes it has), so demand falls through to the next pool by priority; then what no
    healthy pool could take goes back to the backing-off pools, whose launch stays withheld.
    """
    allocated = {pool.name: 0 for pool in pools}
    refusals: list[Refusal] = []
    entries = [(labels, slots, eligible_pools(labels, pools)) for labels, slots in needs.items()]
    for labels, slots, eligible in sorted(entries, key=lambda e: fill_order(e[0], e[2])):
        if not eligible:
            refusals.append(no_pool_refusal(labels, slots))
            continue
        remaining = slots
        skipped: dict[str, int] = {}
        closed: dict[str, int] = {}
        for pool in eligible:
            room = usable_nodes(pool, now) * pool.slots - allocated[pool.name]
            take = min(remaining, max(room, 0))
            allocated[pool.name] += take
            remaining -= take
            if not pool.window_open and remaining > 0:
                closed[pool.name] = min(remaining, (pool.max_nodes - busy_nodes(pool)) * pool.slots)
            elif backing_off(pool, now) and remaining > 0:
                skipped[pool.name] = min(remaining, pool.max_nodes * pool.slots - allocated[pool.name])
        for pool in eligible:
            if not pool.window_open:  # a closed window takes nothing back: it may not launch at all
                continue
            take = min(remaining, pool.max_nodes * pool.slots - allocated[pool.name])
            allocated[pool.name] += take
            remaining -= take
            if pool.name in skipped:
                skipped[pool.name] -= take
        for pool in eligible:
            if skipped.get(pool.name, 0) > 0:
                refusals.append(fall_through_refusal(pool, labels, skipped[pool.name], now))
            if closed.get(pool.name, 0) > 0:
                refusals.append(window_fall_through(pool, labels, closed[pool.name]))
        if remaining > 0:
            refusals.append(max_reached_refusal(labels, remaining, eligible))
    return allocated, refusals


def plan_pool(pool: PoolView, allocated_slots: int, tasks: dict[LabelSet, int]) -> _PoolPlan:
    """Turn the slots this pool was given into a clamped node target plus the counts around it."""
    demand_nodes = nodes_for(allocated_slots, pool.slots)
    return _PoolPlan(
        pool=pool,
        tasks=sum(n for labels, n in tasks.items() if labels <= pool.labels),
        allocated_slots=allocated_slots,
        demand_nodes=demand_nodes,
        target=clamp_to_bounds(demand_nodes, pool),
        serving=count_nodes(pool, SERVING),
        live=count_nodes(pool, LIVE),
    )


def launch_message(plan: _PoolPlan, count: int, cause: Cause, settings: PolicySettings) -> str:
    """One sentence with every number that justified the launch."""
    head = f"launch {count} node(s) in pool {plan.pool.name}: "
    if cause is Cause.MIN_NODES:
        return head + (
            f"{plan.serving} serving is below min_nodes {plan.pool.min_nodes} "
            f"(demand needs {plan.demand_nodes} node(s) here), target {plan.target} node(s)"
        )
    return head + (
        f"{plan.tasks} task(s) need {plan.allocated_slots} slot(s) here at load factor "
        f"{settings.load_factor} ({plan.pool.slots} slots/node), "
        f"target {plan.target} node(s), serving {plan.serving}"
    )


def launch_refusals(plan: _PoolPlan, want: int, room: int, launched: int) -> list[Refusal]:
    """Explain nodes the target wants but this tick does not launch (cap, or max by live nodes)."""
    name, slots = plan.pool.name, plan.pool.slots
    refusals: list[Refusal] = []
    capped = min(want, room) - launched
    if capped > 0:
        refusals.append(Refusal(
            Cause.LAUNCH_CAP,
            f"pool {name} needs {want} more node(s) but max_launch_per_tick allows {launched} "
            f"this tick; {capped} node(s) wait for the next tick",
            pool=name, unmet_slots=capped * slots,
        ))
    blocked = want - room
    if blocked > 0:
        refusals.append(Refusal(
            Cause.MAX_REACHED,
            f"pool {name} needs {want} more node(s) but has {plan.live} live of max_nodes "
            f"{plan.pool.max_nodes} ({plan.live - plan.serving} draining or terminating); "
            f"{blocked} node(s) not launched",
            pool=name, unmet_slots=blocked * slots,
        ))
    return refusals


def backoff_refusal(plan: _PoolPlan, want: int, now: float) -> Refusal:
    """Explain a launch withheld because the pool's recent launches failed."""
    message = (f"pool {plan.pool.name} would launch {want} node(s) but its recent launches failed; "
               f"it waits {plan.pool.launch_backoff_until - now:.0f} s more")
    return Refusal(Cause.BACKOFF, message, pool=plan.pool.name, unmet_slots=want * plan.pool.slots)


def plan_launch(plan: _PoolPlan, settings: PolicySettings, now: float) -> tuple[list[Launch], list[Refusal]]:
    """Eager scale-up: launch up to the target, within max_nodes counting every live node,
    unless the pool is backing off after failed launches."""
    want = plan.target - plan.serving
    if want <= 0:
        return [], []
    if not plan.pool.window_open:
        message = (f"pool {plan.pool.name} would launch {want} node(s) (min_nodes {plan.pool.min_nodes}) "
                   f"but is outside its bursting windows")
        return [], [Refusal(Cause.WINDOW, message, pool=plan.pool.name, unmet_slots=want * plan.pool.slots)]
    if backing_off(plan.pool, now):
        return [], [backoff_refusal(plan, want, now)]
    room = max(plan.pool.max_nodes - plan.live, 0)
    count = min(want, room, settings.max_launch_per_tick)
    launches: list[Launch] = []
    if count > 0:
        cause = Cause.MIN_NODES if plan.demand_nodes <= plan.serving else Cause.DEMAND
        launches.append(Launch(plan.pool.name, count, cause, launch_message(plan, count, cause, settings)))
    return launches, launch_refusals(plan, want, room, count)


def idle_for(node: NodeView, now: float) -> float | None:
    """Seconds the node has been idle with nothing running, or None if it is not idle."""
    if node.status != NodeStatus.IDLE or node.running_tasks != 0 or node.idle_since is None:
        return None
    return now - node.idle_since


def _idle_long_enough(node: NodeView, settings: PolicySettings, now: float) -> bool:
    """Only an idle node with no task, idle for idle_timeout_s, may ever be released."""
    idle = idle_for(node, now)
    return idle is not None and idle >= settings.idle_timeout_s


def release_candidates(plan: _PoolPlan, now: float) -> list[NodeView]:
    """Surplus idle nodes (nothing running), longest idle first, at most the surplus.

    A node is recommended from its first surplus idle tick, so its consecutive-tick count runs
    alongside its idle timer rather than after it: both must be met before it is drained.
    """
    surplus = plan.serving - plan.target
    if surplus <= 0:
        return []
    idle = [n for n in plan.pool.nodes if idle_for(n, now) is not None]
    idle.sort(key=lambda n: (n.idle_since, n.id))
    return idle[:surplus]


def release_message(plan: _PoolPlan, node: NodeView, settings: PolicySettings, now: float) -> str:
    """One sentence with every number that justified releasing ``node``."""
    return (
        f"release node {node.id}: idle {now - node.idle_since:.1f} s "
        f"(idle_timeout_s {settings.idle_timeout_s:g}), recommended on "
        f"{node.removal_streak + 1} consecutive ticks, pool {plan.pool.name} has "
        f"{plan.serving} serving for a target of {plan.target}"
    )


def pending_refusal(plan: _PoolPlan, node: NodeView, settings: PolicySettings) -> Refusal:
    """Explain a release postponed until the node is recommended on enough consecutive ticks."""
    return Refusal(
        Cause.SCALE_DOWN_PENDING,
        f"node {node.id} in pool {plan.pool.name} recommended for removal on "
        f"{node.removal_streak + 1} of {settings.scale_down_ticks} consecutive ticks; not released yet",
        pool=plan.pool.name,
    )


def plan_release(
    plan: _PoolPlan, settings: PolicySettings, now: float
) -> tuple[list[str], list[Drain], list[Refusal]]:
    """Cautious scale-down: drain a surplus node only once it has been idle ``idle_timeout_s``
    *and* recommended on ``scale_down_ticks`` consecutive ticks. Outside its bursting windows a
    pool's idle nodes are drained at once."""
    if not plan.pool.window_open:
        return [], window_drains(plan, now), []
    candidates, drains, refusals = [], [], []
    for node in release_candidates(plan, now):
        candidates.append(node.id)
        if not _idle_long_enough(node, settings, now):
            continue
        if node.removal_streak + 1 >= settings.scale_down_ticks:
            held = paid_time_refusal(plan.pool, node, plan.serving, now)
            if held is not None:
                refusals.append(held)
            else:
                drains.append(Drain(node.id, plan.pool.name, Cause.IDLE, release_message(plan, node, settings, now)))
        else:
            refusals.append(pending_refusal(plan, node, settings))
    return candidates, drains, refusals


def window_drains(plan: _PoolPlan, now: float) -> list[Drain]:
    """Every idle node (nothing running) of a pool whose bursting windows are all closed."""
    message = "release node {id}: pool {pool} is outside its bursting windows and the node is idle ({idle:.1f} s)"
    return [Drain(n.id, plan.pool.name, Cause.WINDOW, message.format(id=n.id, pool=plan.pool.name, idle=idle_for(n, now)))
            for n in sorted(plan.pool.nodes, key=lambda n: n.id) if idle_for(n, now) is not None]


def admit_launches(
    gate: BudgetGate, pool: PoolView, launches: list[Launch], refusals: list[Refusal]
) -> tuple[list[Launch], list[Refusal]]:
    """Pass a pool's launches through the budget gate; what money refuses joins the refusals."""
    admitted: list[Launch] = []
    for launch in launches:
        kept, refused = gate.admit(launch, pool)
        admitted += [kept] if kept is not None else []
        refusals = refusals + ([refused] if refused is not None else [])
    return admitted, refusals


def refusal_key(refusal: Refusal, ranks: dict[str, tuple[int, str]]) -> tuple:
    """Demand-level refusals first (by labels), then pool-level ones in pool order."""
    rank = ranks.get(refusal.pool, (0, "")) if refusal.pool is not None else (0, "")
    return (refusal.pool is not None, rank, tuple(sorted(refusal.labels)), refusal.cause.value, refusal.message)


def decide(snapshot: Snapshot, settings: PolicySettings, now: float) -> Decision:
    """Size every pool from demand and emit launches, drains and refusals for this tick."""
    pools = tuple(sorted(snapshot.pools, key=pool_rank))
    tasks = merge_demand(snapshot.demand)
    needs = {labels: slots_for(n, settings.load_factor) for labels, n in tasks.items()}
    allocated, refusals = allocate(pools, needs, now)
    launches: list[Launch] = []
    drains, upcoming = hard_cap_drains(pools, snapshot.budgets, now, settings.budget_guard_s)
    capped = {d.node_id for d in drains}
    gate = BudgetGate(snapshot.budgets, settings.budget_guard_s, upcoming)
    candidates: list[str] = []
    targets: list[PoolTarget] = []
    for pool in pools:
        plan = plan_pool(pool, allocated[pool.name], tasks)
        targets.append(PoolTarget(pool.name, plan.allocated_slots, plan.target, plan.serving))
        pool_launches, launch_refused = plan_launch(plan, settings, now)
        pool_launches, launch_refused = admit_launches(gate, pool, pool_launches, launch_refused)
        pool_candidates, pool_drains, release_refused = plan_release(plan, settings, now)
        launches += pool_launches
        drains += sorted((d for d in pool_drains if d.node_id not in capped), key=lambda d: d.node_id)
        candidates += sorted(n for n in pool_candidates if n not in capped)
        refusals += launch_refused + release_refused
    ranks = {pool.name: pool_rank(pool) for pool in pools}
    return Decision(
        launches=tuple(launches),
        drains=tuple(drains),
        refusals=tuple(sorted(refusals, key=lambda r: refusal_key(r, ranks))),
        removal_candidates=tuple(candidates),
        targets=tuple(targets),
    )
