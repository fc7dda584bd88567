"""Simulated nodes and workers: tasks wait in per-label queues, nodes boot, run durations, go away.

Why nodes mirror the stored :class:`~rm.models.Node` attributes (``id``, ``pool``, ``status``,
``running_tasks``, ``idle_since``, ``created_at``): the controller's own
:func:`rm.controller.pool_views` turns them into the policy's snapshot. Status moves follow the
production table (a launch starts in booting -> idle <-> busy -> draining -> terminating -> terminated,
or failed), billing
opens at the launch request and closes at confirmed destruction, like :mod:`rm.ledger` says.

Tasks are never objects: a queue holds ``[submit, remaining, duration]`` batches, and a node
runs "k tasks of batch b" as one assignment with one completion event.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from policies.decision import Decision
from providers.base import LaunchErrorKind
from rm.config import ClusterConfig, PoolConfig
from rm.nodes import LaunchBackoff
from rm.simulator.engine import Engine
from rm.simulator.money import LowerBound, MemoryLedger
from rm.simulator.provider import LaunchOutcome, SimProvider
from rm.simulator.workload import Batch
from rm.states import LIVE, NodeStatus

S = NodeStatus
LabelSet = frozenset[str]


class SimNode:
    __slots__ = ("id", "pool", "provider", "status", "slots", "running_tasks", "idle_since", "created_at", "work")

    def __init__(self, node_id: str, pool: PoolConfig, now: float) -> None:
        self.id, self.pool, self.provider, self.slots = node_id, pool.name, pool.provider, pool.slots
        self.status: str = S.BOOTING
        self.running_tasks = 0
        self.idle_since: float | None = None
        self.created_at = now
        self.work: dict[int, tuple[int, float, float, LabelSet]] = {}  # assignment -> (count, submit, duration, labels)

    @property
    def free(self) -> int:
        return self.slots - self.running_tasks if self.status in (S.IDLE, S.BUSY) else 0


class SimCluster:
    """Nodes, queues and the counters metrics read; every change goes through one method."""

    def __init__(self, config: ClusterConfig, providers: dict[str, SimProvider], engine: Engine,
                 terminate_s: dict[str, float]) -> None:
        self.config, self.providers, self.engine, self.terminate_s = config, providers, engine, terminate_s
        self.pools = {p.name: p for p in config.pools}
        self.by_priority = sorted(config.pools, key=lambda p: (p.priority, p.name))
        self.nodes: dict[str, SimNode] = {}  # live nodes only
        self.views: dict = {}  # node id -> its last NodeView, reused by rm.controller.pool_views
        self.free_nodes: dict[str, dict[str, SimNode]] = {p.name: {} for p in config.pools}
        self.queues: dict[LabelSet, deque[list]] = {}
        self.queued: dict[LabelSet, int] = {}
        self.running: dict[LabelSet, int] = {}
        self.backoff: dict[str, LaunchBackoff] = {}
        self.ledger = MemoryLedger(config)
        self.bound = LowerBound(config)
        self._bound_rate = 0.0
        self._busy = 0
        self._last = engine.now
        self._seq = 0
        self._assignments = 0
        self.waits: list[float] = []
        self.wait_counts: list[int] = []
        self.busy_slot_s = 0.0
        self.done = 0
        self.last_done_at = 0.0
        self.launches = self.releases = self.launch_failures = 0
        self.peak_nodes = 0

    # -- bookkeeping -----------------------------------------------------------------------
    def _advance(self) -> None:
        """Integrate busy slots and the lower bound's rate up to now (before any change to running)."""
        now = self.engine.now
        dt = now - self._last
        if dt > 0:
            self.busy_slot_s += self._busy * dt
            self.bound.total += self._bound_rate * dt
            self._last = now

    def _running_changed(self, labels: LabelSet, delta: int) -> None:
        self.running[labels] = self.running.get(labels, 0) + delta
        self._busy += delta
        self._bound_rate = self.bound.rate(self.running)

    def backoff_until(self, pool: str) -> float:
        backoff = self.backoff.get(pool)
        return backoff.until if backoff else 0.0

    def live_count(self) -> int:
        return len(self.nodes)

    # -- tasks -----------------------------------------------------------------------------
    def submit(self, batch: Batch) -> None:
        """``batch`` arrives now (the run schedules it at its submit time)."""
        self.queues.setdefault(batch.labels, deque()).append([self.engine.now, batch.count, batch.duration])
        self.queued[batch.labels] = self.queued.get(batch.labels, 0) + batch.count
        self.dispatch(batch.labels)

    def dispatch(self, labels: LabelSet) -> None:
        """Hand queued tasks of ``labels`` to free slots, pools in priority order."""
        for pool in self.by_priority:
            if not self.queued.get(labels):
                return
            if labels <= frozenset(pool.labels):
                for node in list(self.free_nodes[pool.name].values()):
                    self._fill(node, labels)
                    if not self.queued[labels]:
                        return

    def _servable(self, node: SimNode) -> Iterable[LabelSet]:
        pool_labels = frozenset(self.pools[node.pool].labels)
        return [labels for labels, n in self.queued.items() if n and labels <= pool_labels]

    def _fill(self, node: SimNode, labels: LabelSet) -> None:
        """Start as many tasks of ``labels`` on ``node`` as it has free slots, oldest first."""
        queue = self.queues[labels]
        now = self.engine.now
        while node.free and queue:
            head = queue[0]
            take = min(node.free, head[1])
            head[1] -= take
            if not head[1]:
                queue.popleft()
            self.queued[labels] -= take
            self._start(node, labels, take, head[0], head[2], now)
        if not node.free:
            self.free_nodes[node.pool].pop(node.id, None)

    def _start(self, node: SimNode, labels: LabelSet, count: int, submit: float, duration: float, now: float) -> None:
        self._advance()
        self._assignments += 1
        node.work[self._assignments] = (count, submit, duration, labels)
        node.running_tasks += count
        node.status, node.idle_since = S.BUSY, None
        self._running_changed(labels, count)
        self.waits.append(now - submit)
        self.wait_counts.append(count)
        self.engine.after(duration, self._finish, node, self._assignments)

    def _finish(self, node: SimNode, assignment: int) -> None:
        work = node.work.pop(assignment, None)
        if work is None:  # the node was destroyed under it; the tasks were requeued
            return
        count, _, _, labels = work
        self._advance()
        node.running_tasks -= count
        self._running_changed(labels, -count)
        self.done += count
        self.last_done_at = self.engine.now
        if node.status == S.DRAINING:
            if not node.running_tasks:
                self._terminate(node, "its last task finished while draining")
            return
        if not node.running_tasks:
            node.status, node.idle_since = S.IDLE, self.engine.now
        self._offer(node)

    def _offer(self, node: SimNode) -> None:
        """The node has free slots: it takes queued tasks it can run, and is found by later arrivals."""
        self.free_nodes[node.pool][node.id] = node
        for labels in self._servable(node):
            self._fill(node, labels)

    # -- nodes -----------------------------------------------------------------------------
    def launch(self, pool: PoolConfig, count: int) -> None:
        now = self.engine.now
        for _ in range(count):
            self._seq += 1
            node = SimNode(f"{pool.name}-{self._seq:07d}", pool, now)
            self.nodes[node.id] = node
            self.ledger.start(node, pool, now)
            self.launches += 1
            outcome = self.providers[pool.name].launch()
            if outcome.ok and outcome.after_s > pool.boot_timeout_s:
                self.engine.after(pool.boot_timeout_s, self._boot_timed_out, node)
            elif outcome.ok:
                self.engine.after(outcome.after_s, self._booted, node)
            else:
                self.engine.after(outcome.after_s, self._refused, node, outcome)
        self.peak_nodes = max(self.peak_nodes, len(self.nodes))

    def _booted(self, node: SimNode) -> None:
        if node.status != S.BOOTING:
            return
        self.backoff.pop(node.pool, None)  # the pool launches fine again (as rm.nodes does)
        node.status, node.idle_since = S.IDLE, self.engine.now
        self._offer(node)

    def _refused(self, node: SimNode, outcome: LaunchOutcome) -> None:
        self._fail(node, outcome.error, billed=False)

    def _boot_timed_out(self, node: SimNode) -> None:
        self.providers[node.pool].released()
        self._fail(node, LaunchErrorKind.TRANSIENT, billed=True)

    def _fail(self, node: SimNode, kind: LaunchErrorKind | None, billed: bool) -> None:
        node.status = S.FAILED
        self.launch_failures += 1
        self.backoff.setdefault(node.pool, LaunchBackoff()).failed(self.engine.now, kind)
        self.ledger.stop(node.id, self.engine.now, billed, "launch failed" if not billed else "boot timeout")
        self._forget(node)

    def apply(self, decision: Decision) -> None:
        """Carry out a decision the way the controller's ``_act`` does."""
        for launch in decision.launches:
            self.launch(self.pools[launch.pool], launch.count)
        for drain in decision.drains:
            node = self.nodes.get(drain.node_id)
            if node is None or node.status not in (S.IDLE, S.BUSY):
                continue
            if drain.force:
                self._destroy_now(node)
            elif node.status == S.IDLE:
                self._release(node)

    def _release(self, node: SimNode) -> None:
        self.free_nodes[node.pool].pop(node.id, None)
        node.status = S.DRAINING
        self._terminate(node, "released idle")

    def _destroy_now(self, node: SimNode) -> None:
        """A hard cap with hard_stop: running tasks go back to the head of their queue."""
        self._advance()
        for count, submit, duration, labels in node.work.values():
            self.queues.setdefault(labels, deque()).appendleft([submit, count, duration])
            self.queued[labels] = self.queued.get(labels, 0) + count
            self._running_changed(labels, -count)
        node.work.clear()
        node.running_tasks = 0
        self.free_nodes[node.pool].pop(node.id, None)
        self._terminate(node, "destroyed at the budget's hard cap")

    def _terminate(self, node: SimNode, reason: str) -> None:
        node.status = S.TERMINATING
        self.releases += 1
        self.engine.after(self.terminate_s.get(node.pool, 0.0), self._terminated, node, reason)

    def _terminated(self, node: SimNode, reason: str) -> None:
        node.status = S.TERMINATED
        self.providers[node.pool].released()
        self.ledger.stop(node.id, self.engine.now, True, reason)
        self._forget(node)

    def _forget(self, node: SimNode) -> None:
        del self.nodes[node.id]
        self.views.pop(node.id, None)

    # -- reading ---------------------------------------------------------------------------
    def nodes_per_pool(self) -> dict[str, int]:
        counts = {p: 0 for p in self.pools}
        for node in self.nodes.values():
            if node.status in LIVE:
                counts[node.pool] += 1
        return counts

    def queued_total(self) -> int:
        return sum(self.queued.values())

    def oldest_wait(self) -> float:
        heads = [q[0][0] for q in self.queues.values() if q]
        return self.engine.now - min(heads) if heads else 0.0

    def finish(self) -> None:
        self._advance()
        self.ledger.close_all(self.engine.now)
