"""The node keeper: moves nodes through their lifecycle from what providers and agents report.

Why separate from the controller: the controller decides how many nodes each pool needs; this
module keeps each node's status true (booted, registered, busy, idle, gone, lost) and carries
out the mechanics of a launch and a drain. Every status change goes through
:func:`rm.lifecycle.change_status` and every notable one becomes an event.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from rm.activity import ActivityTracker, WorkerActivity
from rm.actuator import Actuator, Outcome
from rm.config import ClusterConfig, PoolConfig
from rm.demand import queues_for_pool
from rm.events import EventKind, record_event
from rm.ledger import confirm_destroyed, confirm_gone, open_entry
from rm.lifecycle import change_status, create_node
from rm.models import Node
from rm.monitor import Hearing
from rm.states import LIVE, REGISTERED, NodeStatus
from providers.base import CloudNode, CloudState, LaunchErrorKind, LaunchRequest, LaunchResult
from providers.bootstrap import UserDataTooLarge

log = logging.getLogger("rm.nodes")

S = NodeStatus
#: A destroy the provider refused (timeout, 5xx, quota...) is asked again this long after.
TERMINATE_RETRY_S = 5.0
#: After a broker outage, agents get this long to reconnect before their silence counts.
OUTAGE_GRACE_S = 60.0  # kombu retries a lost broker every 2, 4, ... up to 30 s, then a heartbeat: room for both
BACKOFF_FIRST_S = 5.0  # after a pool's first failed launch; doubles per consecutive failure
BACKOFF_MAX_S = 300.0
BACKOFF_MAX_EXPONENT = 16  # 5 s * 2**16 is far past the cap already; a long outage must not overflow a float
#: Failures no retry will fix: the pool waits the longest backoff at once, and says an admin must act.
NEEDS_ADMIN = frozenset({LaunchErrorKind.AUTH, LaunchErrorKind.CONFIG})


@dataclass
class LaunchBackoff:
    """Consecutive launch failures of one pool, and until when it must not launch."""

    failures: int = 0
    until: float = 0.0

    def failed(self, now: float, kind: LaunchErrorKind | None = None, retry_after_s: float | None = None) -> float:
        """Count a failure; the delay doubles per failure, is the longest at once for an
        auth/config error, and is never shorter than the cloud's own Retry-After."""
        self.failures += 1
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(self.failures - 1, BACKOFF_MAX_EXPONENT))
        if kind in NEEDS_ADMIN:
            delay = BACKOFF_MAX_S
        if retry_after_s:
            delay = max(delay, min(retry_after_s, BACKOFF_MAX_S))
        self.until = max(self.until, now + delay)
        return self.until - now


def backoff_sentence(pool: str, kind: LaunchErrorKind | None, delay: float) -> str:
    """How long the pool waits and, for an auth/config error, that retrying alone will not help."""
    admin = " (an admin must fix the credentials or the pool's settings)" if kind in NEEDS_ADMIN else ""
    return f"; pool {pool} waits {delay:.0f} s before launching again{admin}"


def silence_counts_from(started_at: float, hearing: Hearing, timeout_s: float) -> float | None:
    """Since when an agent's silence may make its node lost; None: not now.

    Heartbeats travel through the broker, so while the manager does not hear the broker every
    agent is silent and none of them is lost; after an outage each agent first has to notice it
    and reconnect (Celery's own retry schedule), so silence counts only from ``OUTAGE_GRACE_S``
    after the broker is heard again, minus the usual timeout (a node is lost at the earliest
    ``OUTAGE_GRACE_S`` after the outage ends). Before the manager's start nothing was seen at all.
    """
    if hearing.since is None:
        return None
    counts_from = max(started_at, hearing.since)
    if hearing.resumed_at is not None:
        counts_from = max(counts_from, hearing.resumed_at + OUTAGE_GRACE_S - timeout_s)
    return counts_from


def launched_at(node: Node) -> float:
    """When the node's current launch was requested: a launch resumed after a restart starts the boot clock anew."""
    return max(node.created_at, (node.extra or {}).get("relaunched", 0.0))


@dataclass
class PendingActions:
    """Provider calls to make once the rows that explain them are committed."""

    launches: list[tuple[str, list[LaunchRequest]]] = field(default_factory=list)
    terminations: list[tuple[str, list[str]]] = field(default_factory=list)

    def run(self, actuator: Actuator) -> None:
        for pool, requests in self.launches:
            actuator.launch(pool, requests)
        for pool, node_ids in self.terminations:
            actuator.terminate(pool, node_ids)


class NodeKeeper:
    def __init__(
        self, config: Callable[[], ClusterConfig], actuator: Actuator, tracker: ActivityTracker,
        launch_request: Callable[[Session, PoolConfig, str, float], LaunchRequest], started_at: float,
        hearing: Callable[[], Hearing],
    ) -> None:
        self.config = config
        self.hearing = hearing  # whether the broker, which carries every heartbeat, is heard now
        self.actuator = actuator
        self.tracker = tracker
        self.launch_request = launch_request
        self.started_at = started_at  # events seen only from here: no one is "lost" before a grace
        self._terminate_sent: dict[str, float] = {}
        self._destroy_refused: dict[str, tuple[str, float]] = {}  # ended node id -> (pool, refused at)
        self._orphans: dict[tuple[str, str], float] = {}  # (pool, node id) -> first seen
        self.backoff: dict[str, LaunchBackoff] = {}

    def backoff_until(self, pool: str) -> float:
        return self.backoff.get(pool, LaunchBackoff()).until

    def _launch_failed(self, node: Node, now: float, kind: LaunchErrorKind | None = None,
                       retry_after_s: float | None = None) -> str:
        """Count a failed launch of the node's pool; returns the sentence saying how long it waits."""
        delay = self.backoff.setdefault(node.pool, LaunchBackoff()).failed(now, kind, retry_after_s)
        return backoff_sentence(node.pool, kind, delay)

    # -- queries ---------------------------------------------------------------------------
    @staticmethod
    def live_nodes(session: Session) -> list[Node]:
        return list(session.scalars(select(Node).where(Node.status.in_([s.value for s in LIVE])).order_by(Node.id)))

    # -- launch and drain ------------------------------------------------------------------
    def launch(self, session: Session, pool: PoolConfig, count: int, reason: str, now: float, pending: PendingActions) -> list[str]:
        requests = []
        for _ in range(count):
            node_id = f"{pool.name}-{secrets.token_hex(3)}"
            node = Node(id=node_id, cluster=self.config().cluster, pool=pool.name, provider=pool.provider,
                        slots=pool.slots, labels=list(pool.labels), worker=f"{node_id}@{self.config().cluster}", extra={})
            create_node(session, node, reason, now)
            open_entry(session, node, pool, self.config().currency, now)  # billed from the launch request
            request = self._request_for(session, node, pool, now)
            if request is not None:
                change_status(session, node, S.PROVISIONING, "launch handed to the provider", now)
                requests.append(request)
        if requests:
            pending.launches.append((pool.name, requests))
        return [r.node_id for r in requests]

    def _request_for(self, session: Session, node: Node, pool: PoolConfig, now: float) -> LaunchRequest | None:
        """The node's launch request, or None (and the node failed) if its cloud-init cannot be sent."""
        try:
            return self.launch_request(session, pool, node.id, now)
        except UserDataTooLarge as error:
            message = f"launch of node {node.id} in pool {pool.name} failed (config): {error}" + \
                self._launch_failed(node, now, LaunchErrorKind.CONFIG)
            change_status(session, node, S.FAILED, message, now)
            record_event(session, EventKind.LAUNCH_FAILED, LaunchErrorKind.CONFIG, message, now=now,
                         pool=node.pool, node_id=node.id)
            return None

    def drain(self, session: Session, node: Node, cause: str, reason: str, now: float) -> None:
        """Stop the node consuming; it terminates once its running tasks have finished."""
        change_status(session, node, S.DRAINING, reason, now)
        record_event(session, EventKind.DRAIN, cause, reason, now=now, pool=node.pool, node_id=node.id)
        self.actuator.stop_consuming(node.worker, queues_for_pool(node.cluster, node.labels))

    def destroy_now(self, session: Session, node: Node, cause: str, reason: str, now: float,
                    pending: PendingActions) -> None:
        """A hard stop: drain and destroy at once, running tasks included (the broker redelivers them)."""
        self.drain(session, node, cause, reason, now)
        change_status(session, node, S.TERMINATING, "hard stop: destroyed with its running tasks", now)
        self._terminate_sent[node.id] = now
        pending.terminations.append((node.pool, [node.id]))

    def _fence(self, session: Session, node: Node, target: NodeStatus, kind: EventKind, cause: str,
               message: str, now: float, pending: PendingActions) -> None:
        """Mark a node failed or lost and destroy whatever is left of it, so it can never run twice."""
        change_status(session, node, target, message, now)
        record_event(session, kind, cause, message, now=now, pool=node.pool, node_id=node.id)
        pending.terminations.append((node.pool, [node.id]))
        self.tracker.forget_worker(node.worker or "")

    # -- provider outcomes -----------------------------------------------------------------
    def apply_outcomes(self, session: Session, outcomes: Sequence[Outcome], now: float, pending: PendingActions) -> None:
        # Launches and destroys first: a listing collected in the same tick must not mistake a
        # node whose launch just finished for one whose launch a manager restart interrupted.
        for outcome in sorted(outcomes, key=lambda o: o.op == "list"):
            if outcome.op == "launch":
                self._apply_launch(session, outcome, now, pending)
            elif outcome.op == "terminate":
                self._apply_terminate(session, outcome, now)
                self._remember_refused_destroy(session, outcome, now)
            elif outcome.op == "list" and outcome.error is None:
                self._apply_listing(session, outcome, now, pending)
            if outcome.error is not None:
                log.warning("%s in pool %s failed: %s", outcome.op, outcome.pool, outcome.error, extra={"pool": outcome.pool})
        self._retry_refused_destroys(now, pending)

    def _apply_launch(self, session: Session, outcome: Outcome, now: float, pending: PendingActions) -> None:
        results: list[LaunchResult] = outcome.value or [
            LaunchResult(node_id, False, error=repr(outcome.error), error_kind=None) for node_id in outcome.node_ids
        ]
        for result in results:
            node = session.get(Node, result.node_id)
            if node is None or node.status != S.PROVISIONING:
                continue
            if result.ok:
                node.provider_ref = result.provider_ref
                change_status(session, node, S.BOOTING, f"provider created it ({result.provider_ref})", now)
                continue
            kind = result.error_kind or LaunchErrorKind.TRANSIENT  # an unexpected exception: retry later
            message = (f"launch of node {node.id} in pool {node.pool} failed ({kind}): {result.error}"
                       + self._launch_failed(node, now, kind, result.retry_after_s))
            change_status(session, node, S.FAILED, message, now)
            record_event(session, EventKind.LAUNCH_FAILED, str(kind), message, now=now, pool=node.pool,
                         node_id=node.id, data={"retry_after_s": result.retry_after_s} if result.retry_after_s else None)
            # the cloud may have created it anyway (a timed-out create): make sure it is gone
            pending.terminations.append((node.pool, [node.id]))

    def _apply_terminate(self, session: Session, outcome: Outcome, now: float) -> None:
        for node_id in outcome.node_ids:
            node = session.get(Node, node_id)
            if outcome.error is None:
                self._terminate_sent.pop(node_id, None)
                if node is not None:
                    confirm_destroyed(session, node, now)  # a failed or lost node stops being billed
            if node is None or node.status != S.TERMINATING or outcome.error is not None:
                continue
            change_status(session, node, S.TERMINATED, "the provider destroyed it", now)
            self.tracker.forget_worker(node.worker or "")
            record_event(session, EventKind.TERMINATED, "drained", f"node {node.id} of pool {node.pool} is gone",
                         now=now, pool=node.pool, node_id=node.id)

    def _remember_refused_destroy(self, session: Session, outcome: Outcome, now: float) -> None:
        """A failed or lost node whose destroy the provider refused still has a VM to remove.

        (A draining node's refused destroy is retried by :meth:`_maybe_destroy`.) Without this,
        the VM would wait for the orphan collector's grace (``orphan_grace_s``).
        """
        if outcome.error is None:
            for node_id in outcome.node_ids:
                self._destroy_refused.pop(node_id, None)  # done: no more asking
            return
        for node_id in outcome.node_ids:
            node = session.get(Node, node_id)
            if node is not None and node.status in (S.FAILED, S.LOST):
                self._destroy_refused[node_id] = (outcome.pool, now)

    def _retry_refused_destroys(self, now: float, pending: PendingActions) -> None:
        for node_id, (pool, refused_at) in list(self._destroy_refused.items()):
            if now - refused_at >= TERMINATE_RETRY_S and not self.actuator.busy("terminate", pool, node_id):
                self._destroy_refused[node_id] = (pool, now)  # kept until a destroy succeeds: a failed tick loses nothing
                log.info("asking again to destroy node %s of pool %s", node_id, pool,
                         extra={"pool": pool, "node_id": node_id})
                pending.terminations.append((pool, [node_id]))

    def _apply_listing(self, session: Session, outcome: Outcome, now: float, pending: PendingActions) -> None:
        pool, listed = outcome.pool, list(outcome.value or [])
        by_id = {c.node_id: c for c in listed}
        confirm_gone(session, pool, {c.node_id for c in listed if c.state != CloudState.TERMINATED},
                     outcome.started_at, now)
        busy = self.actuator.in_flight_nodes()
        for node in session.scalars(select(Node).where(Node.pool == pool, Node.status.in_([s.value for s in LIVE]))):
            if node.id in busy or node.updated_at >= outcome.started_at:
                continue  # an operation is under way, or the node changed after the listing began
            self._reconcile_presence(session, node, by_id.get(node.id), now, pending)
        self._collect_orphans(session, pool, listed, busy, outcome.started_at, now, pending)

    def _collect_orphans(self, session: Session, pool: str, listed: Sequence[CloudNode], busy: set[str],
                         listed_at: float, now: float, pending: PendingActions) -> None:
        """Destroy tagged VMs the store does not know, or whose node ended, once seen for the grace period.

        The grace covers a create the cloud finished after the manager gave up on it (a
        timed-out call, a restart mid-launch) and a slow delete already under way.
        """
        grace = self.config().policy.orphan_grace_s
        seen = set()
        for cloud in listed:
            if cloud.state == CloudState.TERMINATED or cloud.node_id in busy:
                continue
            node = session.get(Node, cloud.node_id)
            if node is not None and (node.updated_at >= listed_at or NodeStatus(node.status) in LIVE):
                continue  # ours and alive, or it changed (e.g. was destroyed) after the listing began
            key = (pool, cloud.node_id)
            seen.add(key)
            first = self._orphans.setdefault(key, now)
            whose = "unknown to the store" if node is None else f"of a node that is {node.status}"
            if first == now:
                record_event(session, EventKind.ORPHAN, "found",
                             f"{cloud.provider_ref} in pool {pool} carries our tags but is {whose}: destroying it "
                             f"if it is still there in {grace:.0f} s (orphan_grace_s)",
                             now=now, pool=pool, node_id=cloud.node_id)
            if now - first >= grace:
                record_event(session, EventKind.TERMINATE, "orphan",
                             f"{cloud.provider_ref} in pool {pool} is {whose} and has been for {now - first:.0f} s: "
                             f"destroying the orphan", now=now, pool=pool, node_id=cloud.node_id)
                pending.terminations.append((pool, [cloud.node_id]))
                seen.discard(key)
        self._orphans = {k: v for k, v in self._orphans.items() if k[0] != pool or k in seen}

    def _reconcile_presence(self, session: Session, node: Node, cloud: CloudNode | None, now: float,
                            pending: PendingActions) -> None:
        status = NodeStatus(node.status)
        present = cloud is not None and cloud.state not in (CloudState.TERMINATED, CloudState.FAILED)
        if cloud is not None and cloud.state == CloudState.FAILED and status in (S.PROVISIONING, S.BOOTING):
            message = (f"node {node.id} of pool {node.pool}: the cloud failed to build {cloud.provider_ref}"
                       f" ({cloud.extra.get('fault', 'no reason given')})"
                       + self._launch_failed(node, now, LaunchErrorKind.CAPACITY))
            self._fence(session, node, S.FAILED, EventKind.LAUNCH_FAILED, LaunchErrorKind.CAPACITY, message, now, pending)
        elif status == S.PROVISIONING:  # its launch call is not under way: the manager restarted mid-launch
            if present:
                node.provider_ref = cloud.provider_ref
                change_status(session, node, S.BOOTING, "found in the cloud after a manager restart", now)
            else:
                self._relaunch(session, node, now, pending)
        elif present:
            return
        elif status == S.TERMINATING:
            change_status(session, node, S.TERMINATED, "already gone from the provider", now)
        elif status in (S.BOOTING, S.IDLE, S.BUSY, S.DRAINING):
            booting = self._launch_failed(node, now) if status == S.BOOTING else ""
            self._fence(session, node, S.LOST, EventKind.LOST, "vanished",
                        f"node {node.id} of pool {node.pool} vanished from the provider while {status}; "
                        f"its unfinished tasks are redelivered when their lease expires{booting}", now, pending)

    def _relaunch(self, session: Session, node: Node, now: float, pending: PendingActions) -> None:
        """Retry an interrupted launch once, with the same node id: a provider's launch is
        idempotent per id, so a VM the interrupted call did create is adopted, not doubled."""
        if (node.extra or {}).get("relaunched"):
            self._fence(session, node, S.FAILED, EventKind.LAUNCH_FAILED, "interrupted",
                        f"launch of node {node.id} was interrupted twice by manager restarts", now, pending)
            return
        request = self._request_for(session, node, self.config().pool(node.pool), now)
        if request is None:
            return
        node.extra = {**(node.extra or {}), "relaunched": now}
        node.updated_at = now
        record_event(session, EventKind.LAUNCH, "resumed",
                     f"launch of node {node.id} in pool {node.pool} was interrupted by a manager restart: "
                     f"retrying it with the same node id", now=now, pool=node.pool, node_id=node.id)
        pending.launches.append((node.pool, [request]))

    # -- agents ----------------------------------------------------------------------------
    def observe_workers(self, session: Session, nodes: Sequence[Node], now: float, pending: PendingActions) -> None:
        for node in nodes:
            if NodeStatus(node.status) not in LIVE:
                continue  # fenced earlier in this tick
            worker = self.tracker.workers.get(node.worker or "")
            if worker is not None:
                node.running_tasks = worker.running if worker.online else 0
            status = NodeStatus(node.status)
            if status == S.BOOTING:
                self._observe_booting(session, node, now, pending)
            elif status in REGISTERED:
                silent = self._silence_s(node, worker, now)
                if silent is not None:
                    self._fence(session, node, S.LOST, EventKind.LOST, "heartbeat",
                                f"node {node.id} of pool {node.pool} sent no heartbeat for {silent:.0f} s; "
                                f"its unfinished tasks are redelivered when their lease expires", now, pending)
                elif status in (S.IDLE, S.BUSY):
                    self._track_busy(session, node, now)

    def _silence_s(self, node: Node, worker: WorkerActivity | None, now: float) -> float | None:
        """How long the node's agent has been silent, when that makes it lost; else None.

        Only silence while the broker is heard counts (:func:`silence_counts_from`); an agent
        that announced it went offline is silent from the moment silence counts.
        """
        timeout_s = self.config().policy.heartbeat_timeout_s
        if self.tracker.alive(node.worker or "", now, timeout_s):
            return None
        counts_from = silence_counts_from(self.started_at, self.hearing(), timeout_s)
        if counts_from is None:
            return None
        if worker is None:
            last_seen = node.registered_at or now
        else:
            last_seen = worker.last_seen if worker.online else float("-inf")
        silent = now - max(last_seen, counts_from)
        return silent if silent > timeout_s else None

    def _observe_booting(self, session: Session, node: Node, now: float, pending: PendingActions) -> None:
        pool = self.config().pool(node.pool)
        if self.tracker.alive(node.worker or "", now, self.config().policy.heartbeat_timeout_s):
            took = now - node.created_at
            node.registered_at = now
            node.idle_since = now
            change_status(session, node, S.IDLE, f"agent {node.worker} registered", now)
            self.backoff.pop(node.pool, None)  # the pool launches fine again
            record_event(session, EventKind.REGISTERED, "agent-online",
                         f"node {node.id} of pool {node.pool} is ready {took:.1f} s after its launch was requested",
                         now=now, pool=node.pool, node_id=node.id, data={"boot_s": round(took, 3)})
            self._track_busy(session, node, now)
        elif now - launched_at(node) > pool.boot_timeout_s:
            self._fence(session, node, S.FAILED, EventKind.BOOT_TIMEOUT, "boot-timeout",
                        f"node {node.id} of pool {node.pool} did not register within boot_timeout_s "
                        f"({pool.boot_timeout_s:.0f} s): destroying it" + self._launch_failed(node, now), now, pending)

    @staticmethod
    def _track_busy(session: Session, node: Node, now: float) -> None:
        if node.status == S.IDLE and node.running_tasks > 0:
            node.idle_since = None
            change_status(session, node, S.BUSY, f"{node.running_tasks} task(s) on it", now)
        elif node.status == S.BUSY and node.running_tasks == 0:
            node.idle_since = now
            change_status(session, node, S.IDLE, "its last task finished", now)

    # -- drains ----------------------------------------------------------------------------
    def progress_drains(self, session: Session, nodes: Sequence[Node], now: float, pending: PendingActions) -> None:
        """Draining nodes with nothing left to run shut down; terminating nodes get destroyed."""
        soft_s = self.config().agent.soft_shutdown_timeout_s
        for node in nodes:
            status = NodeStatus(node.status)
            if status == S.DRAINING and node.running_tasks == 0:
                self.actuator.shutdown_agent(node.worker)
                node.extra = {**(node.extra or {}), "shutdown_sent_at": now}
                change_status(session, node, S.TERMINATING, "drained: no task left, agent told to shut down", now)
                record_event(session, EventKind.TERMINATE, "drained",
                             f"node {node.id} of pool {node.pool} has no task left: shutting it down and destroying it",
                             now=now, pool=node.pool, node_id=node.id)
            elif status == S.TERMINATING and not self.actuator.busy("terminate", node.pool, node.id):
                self._maybe_destroy(node, now, soft_s, pending)

    def _maybe_destroy(self, node: Node, now: float, soft_s: float, pending: PendingActions) -> None:
        """Destroy a node told to shut down once its agent is gone, or idle and not going.

        Never while its agent still runs a task: one may have slipped in between the last idle
        observation and the consumer's cancellation; it finishes first.
        """
        sent_at = self._terminate_sent.get(node.id)
        if sent_at is not None and now - sent_at < TERMINATE_RETRY_S:
            return
        shutdown_at = (node.extra or {}).get("shutdown_sent_at", node.updated_at)
        alive = self.tracker.alive(node.worker or "", now, self.config().policy.heartbeat_timeout_s)
        if alive and self.tracker.workers[node.worker].running > 0:
            return
        if not alive or now - shutdown_at > soft_s + 5:
            self._terminate_sent[node.id] = now
            pending.terminations.append((node.pool, [node.id]))
