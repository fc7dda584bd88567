"""What the policy sees: a frozen picture of pools, nodes and demand taken at the top of a tick.

Why frozen dataclasses and no I/O: the controller observes everything once, then asks a
pure function for a decision. The same snapshot replayed gives the same decision, which is
what makes the policy testable with hypothesis and reusable by the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

LabelSet = frozenset[str]


class PolicySettings(Protocol):
    """The knobs the policy reads (``rm.config.PolicyConfig`` satisfies it)."""

    load_factor: float
    idle_timeout_s: float
    scale_down_ticks: int
    max_launch_per_tick: int


@dataclass(frozen=True)
class NodeView:
    id: str
    pool: str
    status: str  # an rm.states.NodeStatus value
    running_tasks: int = 0  # tasks reserved or running on the node right now
    idle_since: float | None = None  # when it last became idle; None unless status is idle
    created_at: float = 0.0
    removal_streak: int = 0  # consecutive previous ticks it was recommended for removal


@dataclass(frozen=True)
class PoolView:
    name: str
    priority: int
    slots: int
    min_nodes: int
    max_nodes: int
    labels: LabelSet = frozenset()
    price_per_hour: float = 0.0
    nodes: tuple[NodeView, ...] = ()
    launch_backoff_until: float = 0.0  # the pool's recent launches failed: no launch before this time


@dataclass(frozen=True)
class Demand:
    """Tasks that need a slot of a pool carrying all of ``labels``."""

    labels: LabelSet
    waiting: int  # messages in the broker queue, all priority sub-queues
    in_flight: int = 0  # reserved (prefetched) or running on a worker

    @property
    def total(self) -> int:
        return self.waiting + self.in_flight


@dataclass(frozen=True)
class Snapshot:
    pools: tuple[PoolView, ...]
    demand: tuple[Demand, ...] = field(default=())

    def pool(self, name: str) -> PoolView:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)
