"""The elector: a thread that takes or renews this instance's leader lease every tick.

Why a thread of its own (Kubernetes' leader election does the same): a slow controller tick must
not let the lease lapse, and a standby must notice an expired lease within one tick. The
controller only asks :meth:`Elector.leading`; the fence (rm/leader.py) guards each action.

A leader that cannot reach the database stops acting once its lease would have expired (judged
on a monotonic clock from its last successful renewal), since a standby may have taken over.
Every change of role is an event with a sentence and moves the ``rm_leader`` gauge.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import SQLAlchemyError

from rm.events import EventKind, record_event
from rm.leader import Fence, Lease, LeaseView
from rm.metrics import LEADER

log = logging.getLogger("rm.election")


class Elector(threading.Thread):
    def __init__(self, lease: Lease, fence: Fence, cluster: str, every_s: float,
                 clock: Callable[[], float] = time.time) -> None:
        super().__init__(name="elector", daemon=True)
        self.lease = lease
        self.fence = fence
        self.cluster = cluster
        self.every_s = every_s
        self.clock = clock
        self.on_elected: Callable[[], None] = lambda: None  # the runtime wakes the controller with it
        self._valid_until = 0.0  # monotonic
        self._row_ready = False
        self._halt = threading.Event()
        LEADER.labels(cluster, lease.holder).set(0)

    @property
    def instance(self) -> str:
        return self.lease.holder

    def leading(self) -> bool:
        return self.fence.epoch is not None and time.monotonic() < self._valid_until

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        while not self._halt.is_set():
            try:
                self.step()
            except Exception:  # never stop electing: an instance whose elector died could never lead
                log.exception("leader election round failed; retrying next tick")
            self._halt.wait(self.every_s)

    def stop(self) -> None:
        """Stop electing; a leader lets its lease expire now so a standby takes over at once."""
        self._halt.set()
        if self.is_alive():
            self.join(timeout=30)
        held = self.fence.epoch
        if held is None:
            return
        try:
            self.lease.release(held, self.clock())
        except SQLAlchemyError as error:
            log.warning("could not release the lease at stop (%s); it expires by itself", error)
        self._lost(held, "it stopped and released the lease", then="a standby takes over at its next round")

    def _who_took_it(self) -> str:
        try:
            current = self.lease.read()
        except SQLAlchemyError:
            return "another instance holds its lease"
        return f"instance {current.holder} took the lease at epoch {current.epoch}" if current else "its lease row is gone"

    def step(self) -> None:
        """One round: renew the lease held, or take an expired one."""
        held = self.fence.epoch
        started = time.monotonic()
        now = self.clock()
        try:
            if not self._row_ready:  # the first round (or the first the database answered)
                self.lease.ensure()
                self._row_ready = True
            if held is not None:
                if self.lease.renew(held, now):
                    self._valid_until = started + self.lease.lease_s
                    return
                self._lost(held, self._who_took_it())  # at once: the controller must not tick once more
                held = None
            taken = self.lease.take_over(now)
        except SQLAlchemyError as error:
            log.warning("instance %s could not reach the lease (%s)", self.instance, error)
            if held is not None and time.monotonic() >= self._valid_until:
                self._lost(held, "it could not renew its lease before it expired")
            return
        if taken is not None:
            self._valid_until = started + self.lease.lease_s
            self._elected(*taken, now)

    # -- role changes ----------------------------------------------------------------------
    def _elected(self, epoch: int, previous: LeaseView, now: float) -> None:
        self.fence.epoch = epoch
        LEADER.labels(self.cluster, self.instance).set(1)
        if previous.holder:
            before = (f"taking over from instance {previous.holder} (epoch {previous.epoch}), "
                      f"whose lease expired {max(0.0, now - previous.expires_at):.1f} s ago")
        else:
            before = "the lease was free"
        self._record("leader_elected", f"instance {self.instance} is the leader of cluster {self.cluster} "
                     f"at epoch {epoch}, {before}; it runs the controller from its next tick",
                     now, {"holder": self.instance, "epoch": epoch, "previous": previous.holder or None})
        self.on_elected()

    def _lost(self, epoch: int, why: str, then: str = "it stops acting and keeps serving the API") -> None:
        self.fence.epoch = None
        self._valid_until = 0.0
        LEADER.labels(self.cluster, self.instance).set(0)
        self._record("leader_lost", f"instance {self.instance} is no longer the leader of cluster {self.cluster} "
                     f"(epoch {epoch}): {why}; {then}",
                     self.clock(), {"holder": self.instance, "epoch": epoch})

    def _record(self, cause: str, message: str, now: float, data: dict) -> None:
        try:
            with self.lease.store.session() as session:
                record_event(session, EventKind.LEADER, cause, message, now=now, data=data)
        except SQLAlchemyError as error:  # the database is what failed: the log line is all we can leave
            log.warning("%s (not recorded as an event: %s)", message, error)
