"""Everything an agent needs to know to join the cluster, in one frozen value.

Why a value object: the local provider passes it as a JSON argument, a cloud bootstrap
writes it into the VM's settings file; either way the agent reads the same fields, so the
same agent runs on-premises and in the cloud.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class AgentSettings:
    node_id: str
    pool: str
    cluster: str
    broker_url: str
    queues: tuple[str, ...]
    slots: int = 1
    boot_delay_s: float = 0.0
    visibility_timeout_s: float = 10.0
    lease_renew_s: float = 2.0
    restore_interval_s: float = 2.0
    soft_shutdown_timeout_s: float = 10.0
    task_modules: tuple[str, ...] = field(default=())
    preemption_watch: str = ""  # "azure": watch the instance metadata for a Spot eviction notice
    broker_ca_pem: str = ""  # the CA of a rediss:// broker's certificate (agents.tls)
    allow_shell: bool = False  # builtin.shell runs only where an admin enabled it (agents.shell)

    @property
    def worker_name(self) -> str:
        """The Celery hostname: the node id first, so every event names its node."""
        return f"{self.node_id}@{self.cluster}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "AgentSettings":
        data = json.loads(text)
        data["queues"] = tuple(data["queues"])
        data["task_modules"] = tuple(data.get("task_modules", ()))
        return cls(**data)


def node_id_of(worker_name: str) -> str:
    """Inverse of :attr:`AgentSettings.worker_name`."""
    return worker_name.split("@", 1)[0]
