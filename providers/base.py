"""The provider interface: the only code that touches a cloud (or, locally, processes).

Why so small: launch / list ours / terminate is all the controller needs, and every extra
verb is one more thing each driver gets subtly wrong. Errors come back as typed values the
next tick uses for backoff and fallback, never as exceptions that stall the loop. The node
id is chosen by the manager before the call and sent as the VM name/tag, so a retried launch
is idempotent and an orphan can always be matched.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from agents.settings import AgentSettings


class CloudState(StrEnum):
    PENDING = "pending"  # being created / booting
    RUNNING = "running"
    STOPPING = "stopping"
    TERMINATED = "terminated"
    UNKNOWN = "unknown"


class LaunchErrorKind(StrEnum):
    QUOTA = "quota"  # quota or capacity exhausted: back off, fall back to the next pool
    CAPACITY = "capacity"
    AUTH = "auth"  # credentials or permissions: an admin must act
    CONFIG = "config"  # bad image/flavor/network: an admin must act
    TRANSIENT = "transient"  # 5xx, timeouts: retry soon
    THROTTLED = "throttled"  # 429: retry after the given delay


@dataclass(frozen=True)
class CloudNode:
    """A provider's VM (or process) normalized into our terms."""

    node_id: str
    pool: str
    provider_ref: str
    state: CloudState
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LaunchResult:
    node_id: str
    ok: bool
    provider_ref: str | None = None
    error_kind: LaunchErrorKind | None = None
    error: str | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True)
class PoolSpec:
    """The slice of a pool's configuration a provider needs (no policy knobs)."""

    name: str
    cluster: str
    slots: int
    boot_delay_s: float = 0.0
    settings: dict[str, Any] = field(default_factory=dict)


class Provider(ABC):
    name: str = "abstract"

    @abstractmethod
    def launch(self, pool: PoolSpec, agents: Sequence[AgentSettings]) -> list[LaunchResult]:
        """Create one VM/process per agent; idempotent for a node id that already exists."""

    @abstractmethod
    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        """Only our nodes of this pool (found by tags), in any state the provider still shows."""

    @abstractmethod
    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        """Destroy these nodes; a node already gone is not an error."""

    def close(self) -> None:
        """Release clients and handles."""
