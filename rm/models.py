"""Database tables (SQLAlchemy 2, portable between SQLite and PostgreSQL).

Why epoch seconds as floats for every timestamp: SQLite has no time zones and the policy
reasons in seconds on a clock it is given; floats keep both databases and the pure code
on one representation. The API renders them as ISO 8601 UTC.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


class DecimalText(TypeDecorator):
    """A Decimal stored as its text: exact on SQLite (whose NUMERIC is a float) and PostgreSQL alike."""

    impl = String(48)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        return None if value is None else str(Decimal(value))

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # chosen before the provider call
    cluster: Mapped[str] = mapped_column(String(64))
    pool: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str] = mapped_column(Text, default="")
    slots: Mapped[int] = mapped_column(Integer)
    labels: Mapped[list[Any]] = mapped_column(default=list)
    provider_ref: Mapped[str | None] = mapped_column(String(256), default=None)  # cloud id / pid
    worker: Mapped[str | None] = mapped_column(String(256), default=None)  # Celery hostname
    running_tasks: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    registered_at: Mapped[float | None] = mapped_column(Float, default=None)
    idle_since: Mapped[float | None] = mapped_column(Float, default=None)
    ended_at: Mapped[float | None] = mapped_column(Float, default=None)
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)


class NodeHistory(Base):
    __tablename__ = "node_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), index=True)
    from_status: Mapped[str] = mapped_column(String(16))
    to_status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[float] = mapped_column(Float)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(128), default="")
    state: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)


class Task(Base):
    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_job_name", "job_id", "name"), Index("ix_tasks_job_state", "job_id", "state"))

    id: Mapped[str] = mapped_column(String(128), primary_key=True)  # <job id>.<name>.<index>
    celery_id: Mapped[str | None] = mapped_column(String(144), default=None, index=True)  # id of the current attempt
    publishes: Mapped[int] = mapped_column(Integer, default=0)  # deliberate (re)submissions; retries make new ids
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    index: Mapped[int] = mapped_column(Integer)
    seq: Mapped[int] = mapped_column(Integer, default=0)  # position in the workflow's topological expansion
    run: Mapped[str] = mapped_column(String(128))
    args: Mapped[dict[str, Any]] = mapped_column()
    after: Mapped[list[Any]] = mapped_column(default=list)
    labels: Mapped[list[Any]] = mapped_column(default=list)
    queue: Mapped[str] = mapped_column(String(256))
    state: Mapped[str] = mapped_column(String(16), index=True)
    node_id: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=0)
    timeout_s: Mapped[float | None] = mapped_column(Float, default=None)
    result: Mapped[Any] = mapped_column(JSON, nullable=True, default=None)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    completions: Mapped[int] = mapped_column(Integer, default=0)  # results recorded (must end at 1)
    queued_at: Mapped[float | None] = mapped_column(Float, default=None)
    started_at: Mapped[float | None] = mapped_column(Float, default=None)
    finished_at: Mapped[float | None] = mapped_column(Float, default=None)


class ScalingEvent(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    cause: Mapped[str] = mapped_column(String(32))
    pool: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    node_id: Mapped[str | None] = mapped_column(String(64), default=None, index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), default=None)
    task_id: Mapped[str | None] = mapped_column(String(128), default=None)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class DashboardSession(Base):
    """A browser's dashboard session: the cookie holds a random id, only its hash is stored.

    Why server-side: logging out or revoking the token ends the session at once, and the cookie
    never carries the API token itself.
    """

    __tablename__ = "dashboard_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)


class BootstrapToken(Base):
    """A node's one-time enrolment token (hashed), exchanged once for its broker settings."""

    __tablename__ = "bootstrap_tokens"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[float] = mapped_column(Float)
    used_at: Mapped[float | None] = mapped_column(Float, default=None)


class LedgerEntry(Base):
    """One node's billed interval: opened at the launch request, closed at confirmed destruction.

    The billing rule (price, unit, minimum) is copied in at launch, so a later price change in the
    config never re-prices the past. ``billed_s`` and ``cost`` are set when the entry closes.
    """

    __tablename__ = "ledger"
    __table_args__ = (Index("ix_ledger_open", "ended_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id"), unique=True)
    pool: Mapped[str] = mapped_column(String(64), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    currency: Mapped[str] = mapped_column(String(3))
    price_per_hour: Mapped[Decimal] = mapped_column(DecimalText)
    unit_s: Mapped[int] = mapped_column(Integer)
    minimum_s: Mapped[int] = mapped_column(Integer)
    slots: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[float] = mapped_column(Float, index=True)  # the launch request
    ended_at: Mapped[float | None] = mapped_column(Float, default=None)  # confirmed destruction
    billed_s: Mapped[int | None] = mapped_column(Integer, default=None)
    cost: Mapped[Decimal | None] = mapped_column(DecimalText, default=None)
    end_reason: Mapped[str | None] = mapped_column(Text, default=None)


class BudgetAlert(Base):
    """A budget threshold crossed in a period: recorded once, so a restart never repeats it."""

    __tablename__ = "budget_alerts"
    __table_args__ = (UniqueConstraint("scope", "period_start", "threshold"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(80))
    period_start: Mapped[float] = mapped_column(Float)
    threshold: Mapped[Decimal] = mapped_column(DecimalText)
    committed: Mapped[Decimal] = mapped_column(DecimalText)
    amount: Mapped[Decimal] = mapped_column(DecimalText)
    at: Mapped[float] = mapped_column(Float)


class PolicyVersion(Base):
    """One policy change applied at run time through the API: who, when, what changed.

    ``document`` is the whole editable policy after the change (what ``GET /api/v1/policy``
    showed next), ``changes`` the fields that moved, each ``{"path", "from", "to"}``.
    """

    __tablename__ = "policy_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    by: Mapped[str] = mapped_column(String(128))
    changes: Mapped[list[Any]] = mapped_column(default=list)
    document: Mapped[dict[str, Any]] = mapped_column(default=dict)


class LeaderLease(Base):
    """Who leads a cluster's instances (rm/leader.py): taken and renewed by conditional UPDATEs.

    ``epoch`` grows by one at every change of holder; it is the fencing token an instance
    checks before it acts, so a paused ex-leader that wakes up after a takeover acts on nothing.
    """

    __tablename__ = "leader_lease"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), default="")
    epoch: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)
    acquired_at: Mapped[float] = mapped_column(Float, default=0.0)
