"""A Nova server read in our terms: its tags (as server tags and metadata), state, address and fault.

Why apart from the provider: this is data mapping with no call to the cloud; the provider
decides what to ask Nova and what to do with the answer.
"""

from __future__ import annotations

from typing import Any

from providers.base import CloudState
from providers.openstack.errors import short

_STATES = {
    "BUILD": CloudState.PENDING,
    "REBUILD": CloudState.PENDING,
    "ACTIVE": CloudState.RUNNING,
    "ERROR": CloudState.FAILED,
    "DELETED": CloudState.TERMINATED,
    "SOFT_DELETED": CloudState.TERMINATED,
    # Powered off, suspended or shelved: the agent cannot run, like a deallocated Azure Spot VM.
    "SHUTOFF": CloudState.STOPPING,
    "STOPPED": CloudState.STOPPING,
    "SUSPENDED": CloudState.STOPPING,
    "PAUSED": CloudState.STOPPING,
    "SHELVED": CloudState.STOPPING,
    "SHELVED_OFFLOADED": CloudState.STOPPING,
}


def server_state(server: Any) -> CloudState:
    """Our state of a server; a server being deleted is STOPPING whatever its status still says."""
    if server.task_state == "deleting":
        return CloudState.STOPPING
    return _STATES.get((server.status or "").upper(), CloudState.UNKNOWN)


def tag_strings(tags: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in tags.items()]


def tag_dict(server: Any) -> dict[str, str]:
    """Our tags of a server: its ``key=value`` server tags, with its metadata as a fallback."""
    found = dict(server.metadata or {})
    for tag in server.tags or []:
        key, sep, value = tag.partition("=")
        if sep:
            found[key] = value
    return found


def regex_literal(text: str) -> str:
    """``text`` as a regular expression matching itself (Nova's ``name`` filter is a regex)."""
    return "".join("\\" + ch if ch in ".^$*+?{}[]\\|()" else ch for ch in text)


def first_ip(server: Any) -> str | None:
    for addresses in (server.addresses or {}).values():
        for address in addresses:
            if address.get("addr"):
                return address["addr"]
    return None


def fault_message(server: Any) -> str:
    fault = server.fault or {}
    return short(fault.get("message") or "the server went to ERROR with no fault given")
