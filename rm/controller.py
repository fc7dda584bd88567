"""The controller loop: observe everything once, decide with a pure policy, then act.

Why this shape (Kubernetes cluster-autoscaler's planner/actuator, Ray autoscaler v2, Dask's
adaptive): the decision is a pure function of a snapshot and a clock, so it can be tested,
replayed and simulated; acting goes through the actuator's futures, so no provider call blocks
a tick; ticks never overlap; an error in a tick is logged and the next tick starts afresh.

With high availability on, only the leader ticks; a standby only follows the agents' events
(so that its picture of who is alive and busy is current the moment it takes over).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from kombu.exceptions import OperationalError
from sqlalchemy.orm import Session

from policies.decision import Decision, Refusal
from policies.load_factor import decide
from policies.snapshot import BudgetView, Demand, NodeView, PoolView, Snapshot
from rm.activity import ActivityTracker
from rm.actuator import Actuator
from rm.billing import UNIT_S
from rm.budget import BudgetCache, budget_views, record_alerts
from rm.config import ClusterConfig, PoolConfig
from rm.demand import build_demand, is_cluster_queue, labels_of, queues_for_pool, waiting_by_queue
from rm.events import EventKind, record_event
from rm.jobs import JobService
from rm.leader import StaleLeader
from rm.metrics import publish_budgets, publish_tick
from rm.models import Node
from rm.monitor import EventMonitor
from rm.nodes import NodeKeeper, PendingActions
from rm.states import NodeStatus
from rm.store import Store
from rm.windows import describe, window_open

log = logging.getLogger("rm.controller")

RECENT_TICKS = 300
REFUSAL_REPEAT_S = 60.0  # a standing refusal is re-explained at most this often
#: What a tick raises while the broker is down or restarting (reading queues, results, publishing).
BROKER_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)


@dataclass(frozen=True)
class TickReport:
    """What one tick saw and did (kept in memory for the status API and the demo timeline)."""

    at: float
    duration_s: float
    demand: tuple[Demand, ...]
    decision: Decision
    nodes_by_pool: dict[str, dict[str, int]] = field(default_factory=dict)


class Controller:
    def __init__(
        self, config: Callable[[], ClusterConfig], store: Store, broker: redis.Redis, monitor: EventMonitor,
        tracker: ActivityTracker, jobs: JobService, actuator: Actuator, keeper: NodeKeeper,
        clock: Callable[[], float] = time.time, leading: Callable[[], bool] = lambda: True,
    ) -> None:
        self.config = config
        self.store = store
        self.broker = broker
        self.monitor = monitor
        self.tracker = tracker
        self.jobs = jobs
        self.actuator = actuator
        self.keeper = keeper
        self.clock = clock
        self.leading = leading
        self._was_leading = False
        self._full_reconcile = False
        self.reports: deque[TickReport] = deque(maxlen=RECENT_TICKS)
        self.streaks: dict[str, int] = {}
        self._refusals_seen: dict[tuple, float] = {}
        self._listed_at: dict[str, float] = {}
        self._budget_cache = BudgetCache()
        self._windows_seen: dict[str, bool] = {}
        self._admin_drains: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._nudged = threading.Event()  # set by stop() and wake(): the loop's wait ends early
        self._broker_lost_at: float | None = None
        self.ticks = 0
        self.errors = 0

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        while not self._halt.is_set():
            started = time.monotonic()
            try:
                if self._lead():
                    self.tick()
                else:
                    self.follow()
            except StaleLeader as error:  # another instance took over mid-tick: nothing of it was committed
                log.warning("controller tick abandoned: %s", error)
            except BROKER_ERRORS as error:  # an outage: one warning for all of it, not one per tick
                self.errors += 1
                self._broker_unreachable(error)
            except Exception:  # never stop adaptive on error: log, and the next tick retries
                self.errors += 1
                log.exception("controller tick failed; retrying next tick")
            else:
                self._broker_reachable()
            elapsed = time.monotonic() - started
            self._nudged.wait(max(0.0, self.config().policy.tick_s - elapsed))
            self._nudged.clear()

    def stop(self) -> None:
        self._halt.set()
        self._nudged.set()

    def wake(self) -> None:
        """Tick now rather than at the end of the current wait (a standby just elected leader)."""
        self._nudged.set()

    def _lead(self) -> bool:
        """Whether to tick; a new leader's first tick reads every unfinished task's outcome."""
        leading = self.leading()
        if leading and not self._was_leading:
            self._full_reconcile = True
        self._was_leading = leading
        return leading

    def follow(self) -> None:
        """A standby's tick: fold the agents' events into the tracker; act on nothing, write nothing."""
        for at, event in self.monitor.drain():
            update = self.tracker.apply(event, at)
            if update is not None and update.kind in ("succeeded", "failed", "revoked"):
                self.tracker.queue_of.pop(update.task_id, None)  # the leader records it; keep the map small

    def _broker_unreachable(self, error: BaseException) -> None:
        if self._broker_lost_at is None:
            self._broker_lost_at = time.monotonic()
            log.warning("the broker is unreachable (%s): ticks fail until it is back; no node is taken for "
                        "lost meanwhile", error)

    def _broker_reachable(self) -> None:
        if self._broker_lost_at is not None:
            log.warning("the broker is reachable again after %.1f s; ticking normally",
                        time.monotonic() - self._broker_lost_at)
            self._broker_lost_at = None

    def request_drain(self, node_id: str, by: str) -> None:
        self._admin_drains.put((node_id, by))

    # -- one tick --------------------------------------------------------------------------
    def tick(self) -> TickReport:
        started = time.monotonic()
        now = self.clock()
        self._observe_agents(now)
        pending = PendingActions()
        with self.store.session() as session:
            self.keeper.apply_outcomes(session, self.actuator.collect(), now, pending)
            nodes = self.keeper.live_nodes(session)
            self.keeper.observe_workers(session, nodes, now, pending)
            self._apply_admin_drains(session, now)
            self.keeper.progress_drains(session, nodes, now, pending)
            nodes = self.keeper.live_nodes(session)
            demand = self._measure_demand()
            config = self.config()  # re-read every tick: a raised budget or an applied policy counts now
            budgets = budget_views(session, config, now, self._budget_cache)
            record_alerts(session, config, budgets, now)
            publish_budgets(config.cluster, budgets)
            snapshot = self.snapshot(nodes, demand, budgets, config, now)
            self._explain_windows(session, snapshot, config, now)
            deciding = time.monotonic()
            decision = decide(snapshot, config.policy, now)
            decide_s = time.monotonic() - deciding
            self._act(session, decision, nodes, now, pending)
            nodes_by_pool = count_by_pool(self.keeper.live_nodes(session))
        pending.run(self.actuator)
        self._request_listings(now)
        self.ticks += 1
        report = TickReport(now, time.monotonic() - started, demand, decision, nodes_by_pool)
        self.reports.append(report)
        publish_tick(config, report, decide_s)
        return report

    def dry_run(self, config: ClusterConfig) -> Decision:
        """The decision ``config`` would take on the current snapshot; nothing is acted on.

        Demand is the last tick's (measuring it again would race the controller thread over the
        activity tracker); nodes, budgets and bursting windows are read now.
        """
        now = self.clock()
        demand = self.reports[-1].demand if self.reports else ()
        with self.store.session() as session:
            nodes = self.keeper.live_nodes(session)
            budgets = budget_views(session, config, now)
            session.expunge_all()
        return decide(self.snapshot(nodes, demand, budgets, config, now), config.policy, now)

    def _observe_agents(self, now: float) -> None:
        updates = [self.tracker.apply(event, at) for at, event in self.monitor.drain()]
        self.jobs.apply_updates(updates, now)
        self.jobs.reconcile(now, full=True if self._full_reconcile else None)
        self._full_reconcile = False
        self.jobs.dispatch_ready(now)  # before demand is measured: what became ready counts this tick

    def _request_listings(self, now: float) -> None:
        """List each pool's nodes at its own pace (one listing in flight per pool)."""
        for pool in self.config().pools:
            if now - self._listed_at.get(pool.name, float("-inf")) >= pool.listing_every_s:
                self._listed_at[pool.name] = now
                self.actuator.list_nodes(pool.name)

    def _measure_demand(self) -> tuple[Demand, ...]:
        cluster = self.config().cluster
        queues = {q for pool in self.config().pools for q in queues_for_pool(cluster, pool.labels)}
        queues |= {q for q in self.tracker.queue_of.values() if is_cluster_queue(cluster, q)}
        waiting = waiting_by_queue(self.broker, sorted(queues))
        in_flight: dict[frozenset[str], int] = {}
        for queue_name, count in self.tracker.in_flight_by_queue().items():
            labels = labels_of(cluster, queue_name) if is_cluster_queue(cluster, queue_name) else frozenset()
            in_flight[labels] = in_flight.get(labels, 0) + count
        return build_demand(cluster, waiting, in_flight)

    def snapshot(self, nodes: Sequence[Node], demand: tuple[Demand, ...], budgets: tuple[BudgetView, ...] = (),
                 config: ClusterConfig | None = None, now: float | None = None) -> Snapshot:
        """The policy's input, built without acting: ``config`` and ``now`` default to the live ones."""
        config = config or self.config()
        now = self.clock() if now is None else now
        pools = pool_views(config, nodes, self.streaks, self.keeper.backoff_until, now)
        return Snapshot(pools=pools, demand=demand, budgets=budgets)

    def _explain_windows(self, session: Session, snapshot: Snapshot, config: ClusterConfig, now: float) -> None:
        """Record each pool's bursting window opening or closing (and its state at the first tick)."""
        for pool in snapshot.pools:
            windows = config.pool(pool.name).windows
            if not windows or self._windows_seen.get(pool.name) == pool.window_open:
                self._windows_seen[pool.name] = pool.window_open
                continue
            self._windows_seen[pool.name] = pool.window_open
            state = "open: it may launch" if pool.window_open else \
                "closed: it launches nothing, its demand falls to the next pool and its idle nodes are released"
            record_event(session, EventKind.WINDOW, "window_open" if pool.window_open else "window_closed",
                         f"pool {pool.name}'s bursting window is {state} (windows: {describe(windows)})",
                         now=now, pool=pool.name)

    # -- acting ----------------------------------------------------------------------------
    def _act(self, session: Session, decision: Decision, nodes: Sequence[Node], now: float, pending: PendingActions) -> None:
        by_id = {node.id: node for node in nodes}
        for launch in decision.launches:
            pool = self.config().pool(launch.pool)
            node_ids = self.keeper.launch(session, pool, launch.count, launch.message, now, pending)
            record_event(session, EventKind.LAUNCH, launch.cause, launch.message, now=now, pool=launch.pool,
                         data={"count": launch.count, "node_ids": node_ids})
        for drain in decision.drains:
            node = by_id.get(drain.node_id)
            if node is None or node.status not in (NodeStatus.IDLE, NodeStatus.BUSY):
                continue
            if drain.force:  # a hard cap with hard_stop: running tasks go back to the broker
                self.keeper.destroy_now(session, node, drain.cause, drain.message, now, pending)
            elif node.status == NodeStatus.IDLE:
                self.keeper.drain(session, node, drain.cause, drain.message, now)
        self.streaks = next_streaks(decision, self.streaks)
        self._explain_refusals(session, decision.refusals, now)

    def _explain_refusals(self, session: Session, refusals: Sequence[Refusal], now: float) -> None:
        """Record a refusal when it starts, and again only every REFUSAL_REPEAT_S while it stands."""
        standing = {}
        for refusal in refusals:
            key = (refusal.cause, refusal.pool, tuple(sorted(refusal.labels)))
            last = self._refusals_seen.get(key)
            if last is None or now - last >= REFUSAL_REPEAT_S:
                record_event(session, EventKind.REFUSED, refusal.cause, refusal.message, now=now, pool=refusal.pool,
                             data={"labels": sorted(refusal.labels), "unmet_slots": refusal.unmet_slots})
                last = now
            standing[key] = last
        self._refusals_seen = standing

    def _apply_admin_drains(self, session: Session, now: float) -> None:
        while True:
            try:
                node_id, by = self._admin_drains.get_nowait()
            except queue.Empty:
                return
            node = session.get(Node, node_id)
            if node is None or node.status not in (NodeStatus.IDLE, NodeStatus.BUSY):
                continue
            message = f"node {node.id} of pool {node.pool} released by {by}; its running tasks finish first"
            self.keeper.drain(session, node, "admin", message, now)

    # -- reading ---------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        report = self.reports[-1] if self.reports else None
        if report is None:
            return {"ticks": self.ticks, "errors": self.errors}
        return {
            "ticks": self.ticks,
            "errors": self.errors,
            "at": report.at,
            "tick_duration_s": round(report.duration_s, 6),
            "demand": [{"labels": sorted(d.labels), "waiting": d.waiting, "in_flight": d.in_flight} for d in report.demand],
            "targets": [t.__dict__ for t in report.decision.targets],
            "nodes_by_pool": report.nodes_by_pool,
        }


class NodeLike(Protocol):
    """What a snapshot reads of a node: a stored :class:`Node` or the simulator's."""

    id: str
    pool: str
    status: str
    running_tasks: int
    idle_since: float | None
    created_at: float


def node_view(node: NodeLike, streak: int) -> NodeView:
    """The policy's picture of one node; ``streak`` is its consecutive removal recommendations."""
    return NodeView(
        id=node.id, pool=node.pool, status=node.status, running_tasks=node.running_tasks,
        idle_since=node.idle_since if node.status == NodeStatus.IDLE else None,
        created_at=node.created_at, removal_streak=streak,
    )


def pool_views(config: ClusterConfig, nodes: Iterable[NodeLike], streaks: dict[str, int],
               backoff_until: Callable[[str], float], now: float,
               memo: dict[str, tuple[tuple, NodeView]] | None = None) -> tuple[PoolView, ...]:
    """Every configured pool as the policy sees it (the controller's and the simulator's snapshot).

    ``memo`` (node id -> last view) reuses a node's view while nothing it shows has changed:
    building 10,000 frozen views a tick is most of a simulated tick's cost at that scale.
    """
    views: dict[str, list[NodeView]] = {}
    for node in nodes:
        streak = streaks.get(node.id, 0)
        if memo is None:
            view = node_view(node, streak)
        else:
            key = (node.status, node.running_tasks, node.idle_since, streak)
            known = memo.get(node.id)
            if known is None or known[0] != key:
                known = memo[node.id] = (key, node_view(node, streak))
            view = known[1]
        views.setdefault(node.pool, []).append(view)
    return tuple(
        PoolView(name=p.name, priority=p.priority, slots=p.slots, min_nodes=p.min_nodes, max_nodes=p.max_nodes,
                 labels=frozenset(p.labels), price_per_hour=p.price_per_hour, nodes=tuple(views.get(p.name, ())),
                 launch_backoff_until=backoff_until(p.name), window_open=window_open(p.windows, now),
                 **billing_fields(p))
        for p in config.pools
    )


def next_streaks(decision: Decision, streaks: dict[str, int]) -> dict[str, int]:
    """Removal streaks after a decision: recommended again and not drained counts one more tick."""
    drained = {d.node_id for d in decision.drains}
    return {n: streaks.get(n, 0) + 1 for n in decision.removal_candidates if n not in drained}


def billing_fields(pool: PoolConfig) -> dict[str, Any]:
    """The pool's billing rule and release window, as the policy's PoolView spells them."""
    return {"billing_unit_s": UNIT_S[pool.billing.granularity], "billing_minimum_s": pool.billing.minimum_s,
            "release_before_end_s": pool.release.before_end_s, "boot_timeout_s": pool.boot_timeout_s}


def count_by_pool(nodes: Sequence[Node]) -> dict[str, dict[str, int]]:
    """Nodes per pool per status, e.g. ``{"burst": {"idle": 2}}``."""
    counts: dict[str, dict[str, int]] = {}
    for node in nodes:
        pool = counts.setdefault(node.pool, {})
        pool[node.status] = pool.get(node.status, 0) + 1
    return counts

