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
    STOPPING = "stopping"  # being deleted or deallocated (Azure Spot eviction deallocates)
    TERMINATED = "terminated"
    FAILED = "failed"  # the cloud gave up building it (OpenStack ERROR, Azure provisioning Failed)
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


#: The tags every VM carries; a listing asks the cloud for VMs carrying the first two.
TAG_CLUSTER = "hybrid-rm-cluster"
TAG_POOL = "hybrid-rm-pool"
TAG_NODE = "hybrid-rm-node"


def tags_for(pool: "PoolSpec", node_id: str) -> dict[str, str]:
    """Cluster, pool and node id as tags: how a restarted manager and orphan collection find a VM."""
    return {TAG_CLUSTER: pool.cluster, TAG_POOL: pool.name, TAG_NODE: node_id}


@dataclass(frozen=True)
class LaunchRequest:
    """One node to create: its id (the VM's name), the agent it runs, and the cloud-init that starts it.

    Cloud providers send ``user_data`` (which holds no long-lived secret: the agent enrols with a
    one-time token); the local provider starts ``agent`` directly, as it runs on this machine.
    """

    node_id: str
    agent: AgentSettings
    user_data: str = ""


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


def classify_http_status(status: int | None) -> LaunchErrorKind:
    """The launch error class of a cloud API's HTTP status, shared by every driver.

    409/403-with-quota bodies are told apart by the drivers (they read the error code); this is
    the fallback when the status is all there is.
    """
    if status is None:
        return LaunchErrorKind.TRANSIENT  # no answer at all: connection refused, timeout
    if status == 429:
        return LaunchErrorKind.THROTTLED
    if status in (401, 403):
        return LaunchErrorKind.AUTH
    if status == 409:
        return LaunchErrorKind.QUOTA
    if status in (400, 404, 422):
        return LaunchErrorKind.CONFIG
    return LaunchErrorKind.TRANSIENT


class Provider(ABC):
    name: str = "abstract"
    #: The largest user data (bytes, before any base64) the cloud accepts; None: no cloud-init.
    user_data_limit: int | None = None

    @abstractmethod
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        """Create one VM/process per request; idempotent for a node id that already exists."""

    @abstractmethod
    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        """Only our nodes of this pool (found by tags), in any state the provider still shows."""

    @abstractmethod
    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        """Destroy these nodes; a node already gone is not an error."""

    def close(self) -> None:
        """Release clients and handles."""
