"""Node statuses and the one table of allowed moves between them.

Why a module without imports: the pure policies read these statuses too, and must not
pull in the store. :mod:`rm.lifecycle` is the only writer.
"""

from __future__ import annotations

from enum import StrEnum


class NodeStatus(StrEnum):
    REQUESTED = "requested"
    PROVISIONING = "provisioning"
    BOOTING = "booting"
    IDLE = "idle"
    BUSY = "busy"
    DRAINING = "draining"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"
    LOST = "lost"


S = NodeStatus

#: Every allowed edge, with the real event behind it.
TRANSITIONS: dict[NodeStatus, dict[NodeStatus, str]] = {
    S.REQUESTED: {
        S.PROVISIONING: "the actuator handed the launch to the provider",
        S.TERMINATED: "the launch was cancelled before any provider call",
        S.FAILED: "the provider refused the launch outright",
    },
    S.PROVISIONING: {
        S.BOOTING: "the provider reports the VM/process exists",
        S.FAILED: "the provider's launch call failed",
        S.TERMINATING: "cancelled while the provider was creating it",
    },
    S.BOOTING: {
        S.IDLE: "the agent registered (worker-online / first heartbeat)",
        S.BUSY: "the agent registered and already runs a task",
        S.FAILED: "the agent did not register within boot_timeout_s",
        S.TERMINATING: "cancelled before the agent registered",
        S.LOST: "the VM/process disappeared while booting",
    },
    S.IDLE: {
        S.BUSY: "a task started on the node",
        S.DRAINING: "the policy or an admin released the node",
        S.LOST: "heartbeats stopped or the VM/process vanished",
    },
    S.BUSY: {
        S.IDLE: "the node's last running task finished",
        S.DRAINING: "an admin or a hard cap released the node; its tasks finish first",
        S.LOST: "heartbeats stopped or the VM/process vanished",
    },
    S.DRAINING: {
        S.TERMINATING: "no task runs any more; the agent was told to shut down",
        S.LOST: "heartbeats stopped or the VM/process vanished while draining",
    },
    S.TERMINATING: {
        S.TERMINATED: "the provider confirmed the VM/process is gone",
    },
    S.TERMINATED: {},
    S.FAILED: {},
    S.LOST: {},
}

TERMINAL: frozenset[NodeStatus] = frozenset(s for s, exits in TRANSITIONS.items() if not exits)
#: Statuses whose node exists or may exist in the provider: they count against max_nodes.
LIVE: frozenset[NodeStatus] = frozenset(NodeStatus) - TERMINAL
#: Statuses whose node will serve tasks (capacity the policy may count on).
SERVING: frozenset[NodeStatus] = frozenset({S.REQUESTED, S.PROVISIONING, S.BOOTING, S.IDLE, S.BUSY})
#: Statuses of a node whose agent is up and consuming.
REGISTERED: frozenset[NodeStatus] = frozenset({S.IDLE, S.BUSY, S.DRAINING})
