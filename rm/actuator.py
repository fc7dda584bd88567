"""The actuator: the only caller of providers, and of the agents' remote-control commands.

Why a thread pool per pool and futures: a cloud launch or a terminate can take minutes, and a
provider outage must never stall the controller's tick, nor another pool's calls (a hung cloud
fills only its own pool's threads). The controller submits work here and, at the top of each
tick, collects what has finished.

Every provider call and agent command first passes ``guard`` (with high availability on, the
leader fence of rm/leader.py): checked in the worker thread right before the call, so an
operation queued by an instance that has since lost the lease is refused, not run late.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from celery import Celery

from providers.base import CloudNode, LaunchRequest, LaunchResult, PoolSpec, Provider
from rm.leader import StaleLeader

log = logging.getLogger("rm.actuator")


@dataclass(frozen=True)
class Outcome:
    """A finished provider operation."""

    op: str  # launch | terminate | list
    pool: str
    node_ids: tuple[str, ...]
    value: Any = None  # list[LaunchResult] | list[CloudNode] | None
    error: BaseException | None = None
    started_at: float = 0.0  # when it was submitted: a listing says nothing of nodes created after


class Actuator:
    def __init__(self, app: Celery, providers: dict[str, Provider], specs: dict[str, PoolSpec],
                 workers_per_pool: int = 4, guard: Callable[[str], None] | None = None) -> None:
        self.app = app
        self.guard = guard or (lambda action: None)  # raises (rm.leader.StaleLeader) to refuse an action
        self.providers = providers  # by pool name
        self.specs = specs
        self._executors = {pool: ThreadPoolExecutor(max_workers=workers_per_pool, thread_name_prefix=f"actuator-{pool}")
                           for pool in providers}
        self._pending: list[tuple[str, str, tuple[str, ...], Future, float]] = []
        self._lock = threading.Lock()

    # -- provider operations (asynchronous) ------------------------------------------------
    def _submit(self, op: str, pool: str, node_ids: Sequence[str], fn: Any, *args: Any) -> None:
        started_at = time.time()
        action = f"{op} in pool {pool}" + (f" (nodes {', '.join(node_ids)})" if node_ids else "")
        future = self._executors[pool].submit(self._guarded, action, fn, *args)
        with self._lock:
            self._pending.append((op, pool, tuple(node_ids), future, started_at))

    def _guarded(self, action: str, fn: Any, *args: Any) -> Any:
        self.guard(action)
        return fn(*args)

    def launch(self, pool: str, requests: Sequence[LaunchRequest]) -> None:
        self._submit("launch", pool, [r.node_id for r in requests], self.providers[pool].launch, self.specs[pool],
                     list(requests))

    def terminate(self, pool: str, node_ids: Sequence[str]) -> None:
        self._submit("terminate", pool, node_ids, self.providers[pool].terminate, self.specs[pool], list(node_ids))

    def list_nodes(self, pool: str) -> None:
        """Ask for a listing unless one for this pool is already under way."""
        if not self.busy("list", pool):
            self._submit("list", pool, (), self.providers[pool].list_nodes, self.specs[pool])

    def busy(self, op: str, pool: str, node_id: str | None = None) -> bool:
        with self._lock:
            return any(p_op == op and p_pool == pool and (node_id is None or node_id in ids)
                       for p_op, p_pool, ids, _, _ in self._pending)

    def in_flight_nodes(self) -> set[str]:
        with self._lock:
            return {node_id for _, _, ids, _, _ in self._pending for node_id in ids}

    def collect(self) -> list[Outcome]:
        """Outcomes of the operations that finished since the last call."""
        with self._lock:
            done = [item for item in self._pending if item[3].done()]
            self._pending = [item for item in self._pending if not item[3].done()]
        outcomes = []
        for op, pool, node_ids, future, started_at in done:
            error = future.exception()
            if isinstance(error, StaleLeader):  # refused before any provider call: it did nothing to apply
                log.info("%s in pool %s dropped: refused under a stale epoch", op, pool, extra={"pool": pool})
                continue
            outcomes.append(Outcome(op, pool, node_ids, None if error else future.result(), error, started_at))
        return outcomes

    def terminate_now(self, pool: str, node_ids: Sequence[str]) -> None:
        """Synchronous destroy, used only when the manager stops."""
        self.guard(f"terminate in pool {pool} (nodes {', '.join(node_ids)})")
        self.providers[pool].terminate(self.specs[pool], list(node_ids))

    # -- agent remote control (broadcast, no reply awaited) --------------------------------
    def stop_consuming(self, worker: str, queues: Sequence[str]) -> None:
        self.guard(f"stop agent {worker} consuming")
        for queue in queues:
            self.app.control.cancel_consumer(queue, destination=[worker])

    def shutdown_agent(self, worker: str) -> None:
        self.guard(f"shut agent {worker} down")
        self.app.control.shutdown(destination=[worker])

    def close(self) -> None:
        for executor in self._executors.values():
            executor.shutdown(wait=True, cancel_futures=True)
        for provider in {id(p): p for p in self.providers.values()}.values():
            provider.close()


__all__ = ["Actuator", "Outcome", "CloudNode", "LaunchResult"]
