"""Cost reports: the ledger's money in a time window, grouped by pool, provider, day, job or owner.

Why the arithmetic lives apart from the API: the same report is a JSON body, a CSV file and an
``rmctl costs`` table, and the tests compute it from ledger entries without HTTP.

Exactness. Every share is an exact Decimal (see :mod:`rm.ledger`); the total is the exact sum
rounded half-even to the cent, and the rows are apportioned to the cent by largest remainder
(each row rounded down, the missing cents given to the rows that lost the most), so the rows
always add up to the total exactly.

Attribution (group by job or owner). A task pays its run time on its node (clipped to the
window and to the node's billed lifetime) times the node's price divided by the node's slots.
What the node cost beyond its tasks (boot, idle time, rounding, minimum) is the pool's idle cost,
shown as its own row per pool, never spread over the jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from rm.billing import CENT, ZERO, cents, cost_of
from rm.ledger import cost_between, entries_between
from rm.models import Job, LedgerEntry, Task

GROUP_BY = ("pool", "provider", "day", "job", "owner")
IDLE = "(idle)"


@dataclass(frozen=True)
class TaskRun:
    """One task's run on a node (the part of the tasks table attribution needs)."""

    job_id: str
    node_id: str
    started_at: float
    finished_at: float | None  # None: still running


@dataclass(frozen=True)
class JobInfo:
    name: str
    owner: str


def node_split(entry: LedgerEntry, runs: Sequence[TaskRun], start: float, end: float,
               now: float) -> tuple[list[tuple[str, Decimal]], Decimal]:
    """The node's share of ``[start, end)`` split into (job, cost) per task run, and the idle rest."""
    portion = cost_between(entry, start, end, now)
    lo = max(start, entry.started_at)
    hi = min(end, entry.ended_at if entry.ended_at is not None else now)
    left, shares = portion, []
    for run in sorted(runs, key=lambda r: (r.started_at, r.job_id)):
        seconds = min(hi, run.finished_at if run.finished_at is not None else now) - max(lo, run.started_at)
        if seconds <= 0:
            continue
        share = min(cost_of(entry.price_per_hour, seconds, entry.slots), left)
        left -= share
        shares.append((run.job_id, share))
    return shares, left


def utc_days(first: float, last: float, start: float, end: float) -> Iterable[tuple[str, float, float]]:
    """The UTC days from the one holding ``first`` to the one holding ``last``, each as a window
    clipped to ``[start, end)``; contiguous, so an entry's shares telescope to its window cost."""
    day = datetime.fromtimestamp(first, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    while day.timestamp() <= last:
        following = day + timedelta(days=1)
        lo, hi = max(start, day.timestamp()), min(end, following.timestamp())
        if lo < hi:
            yield day.date().isoformat(), lo, hi
        day = following


def exact_rows(group_by: str, entries: Sequence[LedgerEntry], runs: Sequence[TaskRun], jobs: dict[str, JobInfo],
               start: float, end: float, now: float) -> dict[tuple[str, ...], Decimal]:
    """Exact cost per group key (a tuple of the row's key columns), before any rounding."""
    rows: dict[tuple[str, ...], Decimal] = {}

    def add(key: tuple[str, ...], amount: Decimal) -> None:
        rows[key] = rows.get(key, ZERO) + amount

    runs_by_node: dict[str, list[TaskRun]] = {}
    for run in runs:
        runs_by_node.setdefault(run.node_id, []).append(run)
    for entry in entries:
        if group_by == "pool":
            add((entry.pool,), cost_between(entry, start, end, now))
        elif group_by == "provider":
            add((entry.provider,), cost_between(entry, start, end, now))
        elif group_by == "day":
            last = min(end, entry.ended_at if entry.ended_at is not None else now)
            for day, lo, hi in utc_days(max(start, entry.started_at), last, start, end):
                add((day,), cost_between(entry, lo, hi, now))
        else:
            shares, idle = node_split(entry, runs_by_node.get(entry.node_id, ()), start, end, now)
            for job_id, share in shares:
                info = jobs.get(job_id, JobInfo("", ""))
                add((job_id, info.name, info.owner, "") if group_by == "job" else (info.owner, ""), share)
            add(("", IDLE, "", entry.pool) if group_by == "job" else (IDLE, entry.pool), idle)
    return rows


KEY_COLUMNS = {"pool": ("pool",), "provider": ("provider",), "day": ("day",),
               "job": ("job", "name", "owner", "pool"), "owner": ("owner", "pool")}


def apportion(exact: dict[tuple[str, ...], Decimal]) -> tuple[Decimal, dict[tuple[str, ...], Decimal]]:
    """The total rounded to the cent, and rows in cents that add up to it exactly (largest remainder)."""
    total = cents(sum(exact.values(), ZERO))
    floors = {key: value.quantize(CENT, rounding=ROUND_FLOOR) for key, value in exact.items()}
    missing = int((total - sum(floors.values(), ZERO)) / CENT)
    by_loss = sorted(exact, key=lambda k: (-(exact[k] - floors[k]), k))
    for key in by_loss[:missing]:
        floors[key] += CENT
    return total, floors


def cost_report(group_by: str, entries: Sequence[LedgerEntry], runs: Sequence[TaskRun], jobs: dict[str, JobInfo],
                start: float, end: float, now: float, currency: str) -> dict[str, Any]:
    """The report body: ``{"currency", "total", "rows": [{<key columns>, "cost"}]}`` (money as strings)."""
    exact = exact_rows(group_by, entries, runs, jobs, start, end, now)
    total, rounded = apportion(exact)
    columns = KEY_COLUMNS[group_by]
    rows = [{**{c: (v or None) for c, v in zip(columns, key)}, "cost": str(rounded[key])}
            for key in sorted(exact, key=lambda k: (k[0] == IDLE or k[0] == "", k))]
    return {"currency": currency, "group_by": group_by, "from": start, "to": end, "total": str(total), "rows": rows}


def load_report(session: Session, group_by: str, start: float, end: float, now: float, currency: str) -> dict[str, Any]:
    """Read what the report needs from the store (ledger entries, and task runs for job/owner)."""
    entries = entries_between(session, start, end)
    runs: list[TaskRun] = []
    jobs: dict[str, JobInfo] = {}
    if group_by in ("job", "owner") and entries:
        node_ids = [e.node_id for e in entries]
        query = select(Task.job_id, Task.node_id, Task.started_at, Task.finished_at).where(
            Task.node_id.in_(node_ids), Task.started_at.is_not(None), Task.started_at < end,
            or_(Task.finished_at.is_(None), Task.finished_at > start))
        runs = [TaskRun(*row) for row in session.execute(query)]
        job_ids = sorted({r.job_id for r in runs})
        for job_id, name, owner in session.execute(select(Job.id, Job.name, Job.owner).where(Job.id.in_(job_ids))):
            jobs[job_id] = JobInfo(name, owner)
    return cost_report(group_by, entries, runs, jobs, start, end, now, currency)
