"""A Libcloud node read in our terms (state, our tags, a few safe extras), and the EC2
idempotency token of a node id.

Why apart from the provider: data mapping with no call to the cloud; it also decides what of a
driver's ``extra`` may be shown (never all of it: OpenStack's holds the admin password).
"""

from __future__ import annotations

import hashlib
from typing import Any

from providers.base import CloudState, PoolSpec

_STATES = {
    "pending": CloudState.PENDING, "starting": CloudState.PENDING, "rebooting": CloudState.RUNNING,
    "running": CloudState.RUNNING, "reconfiguring": CloudState.RUNNING, "stopping": CloudState.STOPPING,
    "stopped": CloudState.STOPPING, "suspended": CloudState.STOPPING, "paused": CloudState.STOPPING,
    "terminated": CloudState.TERMINATED, "error": CloudState.FAILED, "unknown": CloudState.UNKNOWN,
}
#: EC2 states Libcloud folds into UNKNOWN ("shutting-down") or STOPPED, from node.extra["status"].
_EC2_STATES = {"shutting-down": CloudState.STOPPING, "stopping": CloudState.STOPPING,
               "terminated": CloudState.TERMINATED}


def node_state(node: Any) -> CloudState:
    status = node.extra.get("status") if isinstance(node.extra, dict) else None
    if isinstance(status, str) and status in _EC2_STATES:
        return _EC2_STATES[status]
    return _STATES.get(str(node.state), CloudState.UNKNOWN)


def node_tags(node: Any) -> dict[str, str]:
    """EC2/Azure ``tags``, GCE ``labels``, OpenStack ``metadata``: whichever the driver fills."""
    tags: dict[str, str] = {}
    for key in ("metadata", "labels", "tags"):
        value = node.extra.get(key) if isinstance(node.extra, dict) else None
        if isinstance(value, dict):
            tags.update({str(k): v for k, v in value.items() if isinstance(v, str)})
    return tags


def node_extra(node: Any) -> dict[str, Any]:
    """A few useful, non-secret fields (never the whole driver extra: OpenStack's holds adminPass)."""
    extra = node.extra if isinstance(node.extra, dict) else {}
    size = extra.get("instance_type") or extra.get("flavorId") or extra.get("machineType") or getattr(
        getattr(node, "size", None), "id", None)
    ips = list(node.public_ips or []) + list(node.private_ips or [])
    out = {"name": node.name, "size": size, "image": extra.get("image_id") or extra.get("imageId"),
           "ip": ips[0] if ips else None, "private_ip": (node.private_ips or [None])[0],
           "zone": extra.get("availability") or extra.get("availability_zone"),
           "spot": extra.get("instance_lifecycle") == "spot", "status": extra.get("status")}
    return {k: v for k, v in out.items() if v is not None}


def client_token(pool: PoolSpec, node_id: str) -> str:
    """EC2 ClientToken (<= 64 ASCII): RunInstances with a seen token returns the first instance."""
    return "hrm-" + hashlib.sha256(f"{pool.cluster}/{pool.name}/{node_id}".encode()).hexdigest()[:40]
