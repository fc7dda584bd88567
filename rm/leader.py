"""The leader lease and its fence: one row per cluster says which instance may act, and since when.

Why a row and conditional UPDATEs (not a PostgreSQL advisory lock or a Redis lock): it works the
same on SQLite and PostgreSQL, survives a broker restart, and gives a fencing token for free.
An instance takes the lease only once it has expired (``UPDATE ... WHERE expires_at <= now``)
and renews it only while it still holds it (``WHERE holder = me AND epoch = mine``); the database
serialises two such UPDATEs, so at most one instance holds a given epoch, and the epoch grows by
one at every change of holder.

The fence is what makes the epoch matter: before a provider call, an agent command or the commit
of a transaction that wrote node rows, the instance compares its epoch with the row's and refuses
if another instance took over, so an ex-leader that was paused (a long GC, a frozen VM, SIGSTOP)
acts on nothing when it wakes up. The commit check reads the row ``FOR SHARE`` after the flush, in
the same transaction: a takeover waits for that commit, and a commit after a takeover sees it.
Expiry is judged on the instances' clocks: hosts sharing a database must keep NTP time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rm.models import LeaderLease, LedgerEntry, Node, NodeHistory
from rm.store import Store

log = logging.getLogger("rm.leader")

#: Rows only the leader writes: node status (and its history) and the billing that follows it.
FENCED_ROWS = (Node, NodeHistory, LedgerEntry)
_FENCED_FLAG = "rm_fenced_write"


class StaleLeader(RuntimeError):
    """This instance tried to act under an epoch that is no longer the lease's."""


@dataclass(frozen=True)
class LeaseView:
    name: str
    holder: str
    epoch: int
    expires_at: float
    acquired_at: float

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "holder": self.holder or None, "epoch": self.epoch,
                "expires_at": self.expires_at, "acquired_at": self.acquired_at}


def _view(row: LeaderLease) -> LeaseView:
    return LeaseView(row.name, row.holder, row.epoch, row.expires_at, row.acquired_at)


class Lease:
    """The lease row of one cluster, as seen by one instance (``holder``)."""

    def __init__(self, store: Store, name: str, holder: str, lease_s: float) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.lease_s = lease_s

    def ensure(self) -> None:
        """Create the row (unheld, epoch 0) unless it exists; two instances may race here harmlessly."""
        try:
            with self.store.session() as session:
                if session.get(LeaderLease, self.name) is None:
                    session.add(LeaderLease(name=self.name, holder="", epoch=0, expires_at=0.0, acquired_at=0.0))
        except IntegrityError:
            pass  # the other instance inserted it first

    def read(self) -> LeaseView | None:
        with self.store.session() as session:
            row = session.get(LeaderLease, self.name)
            return None if row is None else _view(row)

    def renew(self, epoch: int, now: float) -> bool:
        """Extend the lease if this instance still holds ``epoch``; False if it does not."""
        with self.store.session() as session:
            result = session.execute(
                update(LeaderLease)
                .where(LeaderLease.name == self.name, LeaderLease.holder == self.holder, LeaderLease.epoch == epoch)
                .values(expires_at=now + self.lease_s))
            return result.rowcount == 1

    def take_over(self, now: float) -> tuple[int, LeaseView] | None:
        """Take the lease if it has expired: returns the new epoch and the lease as it was, or None."""
        with self.store.session() as session:
            before = session.get(LeaderLease, self.name)
            if before is None or before.expires_at > now:
                return None
            previous = _view(before)
            result = session.execute(
                update(LeaderLease)
                .where(LeaderLease.name == self.name, LeaderLease.expires_at <= now)
                .values(holder=self.holder, epoch=LeaderLease.epoch + 1, expires_at=now + self.lease_s,
                        acquired_at=now)
                .execution_options(synchronize_session=False))
            if result.rowcount != 1:
                return None  # another instance took it between our read and our UPDATE
            epoch = session.scalar(select(LeaderLease.epoch).where(LeaderLease.name == self.name))
            return epoch, previous

    def release(self, epoch: int, now: float) -> bool:
        """Let the lease expire now (a clean stop), so a standby takes over at its next round."""
        with self.store.session() as session:
            result = session.execute(
                update(LeaderLease)
                .where(LeaderLease.name == self.name, LeaderLease.holder == self.holder, LeaderLease.epoch == epoch)
                .values(expires_at=now))
            return result.rowcount == 1


class Fence:
    """The epoch this instance acts under (None: it is not the leader), checked before it acts."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.epoch: int | None = None

    def check(self, action: str) -> None:
        """Raise StaleLeader (and say so in the log) unless this instance holds the lease at its epoch."""
        with self.lease.store.session() as session:
            self._verify(session, action, lock=False)

    def install(self, store: Store) -> None:
        """Check the epoch at the commit of every transaction that wrote node or ledger rows."""
        from sqlalchemy import event

        event.listen(store.sessionmaker, "after_flush", _mark_fenced_writes)
        event.listen(store.sessionmaker, "before_commit", self._before_commit)

    def _before_commit(self, session: Session) -> None:
        if not (_has_fenced(session.new, session.dirty, session.deleted) or session.info.get(_FENCED_FLAG)):
            return
        session.flush()  # take the write locks first: the check then sees the latest lease
        session.info.pop(_FENCED_FLAG, None)
        self._verify(session, "write node status", lock=True)

    def _verify(self, session: Session, action: str, lock: bool) -> None:
        query = select(LeaderLease.holder, LeaderLease.epoch).where(LeaderLease.name == self.lease.name)
        row = session.execute(query.with_for_update(read=True) if lock else query).first()
        mine = self.epoch
        if mine is not None and row is not None and (row.holder, row.epoch) == (self.lease.holder, mine):
            return
        now_held = f"instance {row.holder or 'nobody'} at epoch {row.epoch}" if row is not None else "nobody"
        message = (f"instance {self.lease.holder} refuses to {action}: it acts under epoch {mine} "
                   f"but the lease is held by {now_held}")
        log.error(message)
        raise StaleLeader(message)


def _has_fenced(*collections: Any) -> bool:
    return any(isinstance(obj, FENCED_ROWS) for collection in collections for obj in collection)


def _mark_fenced_writes(session: Session, _context: Any) -> None:
    if _has_fenced(session.new, session.dirty, session.deleted):
        session.info[_FENCED_FLAG] = True
