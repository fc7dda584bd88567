"""What the policy answers: launches, drains and refusals, each with a typed cause and a sentence.

Why every item carries a human sentence: "explain every decision" is a product promise; the
controller turns each item into an event, a log line and a dashboard row without rewording.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from policies.snapshot import LabelSet


class Cause(StrEnum):
    DEMAND = "demand"  # launch: demand needs more slots than the pool has
    MIN_NODES = "min_nodes"  # launch: pool below its minimum
    IDLE = "idle"  # drain: idle past idle_timeout_s and surplus on consecutive ticks
    MAX_REACHED = "max_reached"  # refusal: every eligible pool is at max_nodes
    NO_POOL = "no_pool"  # refusal: no pool carries the labels the tasks ask for
    LAUNCH_CAP = "launch_cap"  # refusal: more launches needed than max_launch_per_tick allows
    SCALE_DOWN_PENDING = "scale_down_pending"  # not yet: recommended, waiting for consecutive ticks
    BACKOFF = "backoff"  # refusal: the pool's recent launches failed; it waits before trying again
    BUDGET = "budget"  # refusal: the launch's minimum billed unit would pass a period budget
    BURN_RATE = "burn_rate"  # refusal: the launch would pass a budget's max_burn_per_hour
    HARD_CAP = "hard_cap"  # drain: the money spent in the period reached a budget
    PAID_TIME = "paid_time"  # not yet: an idle node is kept until shortly before its paid time ends
    WINDOW = "window"  # refusal / drain: the pool is outside its bursting windows


@dataclass(frozen=True)
class Launch:
    pool: str
    count: int
    cause: Cause
    message: str


@dataclass(frozen=True)
class Drain:
    node_id: str
    pool: str
    cause: Cause
    message: str
    force: bool = False  # destroy without waiting for running tasks (a hard cap with hard_stop)


@dataclass(frozen=True)
class Refusal:
    """A non-decision worth explaining: demand left unmet, or a release postponed."""

    cause: Cause
    message: str
    pool: str | None = None
    labels: LabelSet = frozenset()
    unmet_slots: int = 0


@dataclass(frozen=True)
class PoolTarget:
    """How the policy sized one pool this tick (for explanation and metrics)."""

    pool: str
    needed_slots: int  # slots assigned to this pool by the load-factor fill
    target_nodes: int  # after clamping to [min_nodes, max_nodes]
    serving_nodes: int  # nodes that serve or will serve (requested .. busy)


@dataclass(frozen=True)
class Decision:
    launches: tuple[Launch, ...] = ()
    drains: tuple[Drain, ...] = ()
    refusals: tuple[Refusal, ...] = ()
    removal_candidates: tuple[str, ...] = ()  # recommended for removal this tick (streak + 1)
    targets: tuple[PoolTarget, ...] = field(default=())
