"""The cloud-init that turns a fresh VM into an agent of the cluster.

Why this shape: every cloud takes cloud-init user data, so one renderer serves Azure,
OpenStack and any Libcloud cloud. It installs the *same pinned version* of our package as the
manager runs (from an index, a wheel URL, or nothing for a prebuilt image), writes a bootstrap
file and runs the agent as a systemd unit whose stop is Celery's warm (soft) shutdown.

No long-lived secret travels in user data, which any process on the VM and anyone with read
access to the VM in the cloud console can read: the bootstrap file holds only the API URL,
the node id and a one-time token bound to that node id, which the agent exchanges once over the
API for its broker settings (``rm.enrolment``). The settings it receives are kept on the VM's
disk (root-only) so a restarted agent does not need to enrol again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

USER_DATA_LIMIT = 64 * 1024  # Azure custom data and the OpenStack default: 64 KiB
CONFIG_DIR = "/etc/hybrid-rm"
BOOTSTRAP_FILE = f"{CONFIG_DIR}/bootstrap.json"
SETTINGS_FILE = f"{CONFIG_DIR}/agent.json"
UNIT_NAME = "hybrid-rm-agent.service"
PACKAGE = "hybrid-rm"


def package_version() -> str:
    """The version the manager runs: the agents install exactly this one."""
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0.0.0"


class BootstrapConfig(BaseModel):
    """How a cloud pool's VMs get the agent (the pool's ``bootstrap:`` block)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    install: Literal["pip", "wheel", "none"] = Field(
        "pip", description="pip: from an index; wheel: from wheel_url; none: the image has it already")
    index_url: str | None = Field(None, description="package index to install from (default: PyPI)")
    wheel_url: str | None = Field(None, description="URL of the hybrid-rm wheel (install: wheel)")
    version: str | None = Field(None, description="agent version to install; default: the manager's own")
    requirements: tuple[str, ...] = Field((), description="extra pip requirements, e.g. the task modules' packages")
    os_packages: tuple[str, ...] = Field(("python3-venv",), description="OS packages cloud-init installs first")
    python: str = Field("python3", description="interpreter that creates the agent's virtualenv")
    prefix: str = Field("/opt/hybrid-rm", description="where the agent's virtualenv lives")
    size_limit: int = Field(USER_DATA_LIMIT, gt=0, le=USER_DATA_LIMIT,
                            description="largest user data accepted, in bytes")

    @model_validator(mode="after")
    def _wheel_needs_url(self) -> "BootstrapConfig":
        if self.install == "wheel" and not self.wheel_url:
            raise ValueError("wheel_url is required when install is 'wheel'")
        return self


@dataclass(frozen=True)
class Enrolment:
    """What a VM needs to join: where the API is, who it is, and its one-time token."""

    api_url: str
    node_id: str
    token: str
    soft_shutdown_timeout_s: float = 10.0
    ca_bundle_pem: str | None = None  # the API's CA, when it is not publicly trusted


class UserDataTooLarge(ValueError):
    """The rendered cloud-init does not fit the cloud's user-data limit."""


def _install_commands(config: BootstrapConfig, venv: str) -> list[list[str]]:
    pip = f"{venv}/bin/pip"
    if config.install == "none":
        return []
    target = config.wheel_url if config.install == "wheel" else f"{PACKAGE}=={config.version or package_version()}"
    index = ["--index-url", config.index_url] if config.index_url else []
    commands = [[config.python, "-m", "venv", venv], [pip, "install", "--quiet", *index, target]]
    if config.requirements:
        commands.append([pip, "install", "--quiet", *index, *config.requirements])
    return commands


def _unit(config: BootstrapConfig, enrolment: Enrolment) -> str:
    python = f"{config.prefix}/venv/bin/python" if config.install != "none" else config.python
    stop_s = int(enrolment.soft_shutdown_timeout_s) + 30
    return "\n".join([
        "[Unit]",
        f"Description=hybrid-rm agent for node {enrolment.node_id}",
        "Wants=network-online.target",
        "After=network-online.target",
        "",
        "[Service]",
        f"Environment=RM_AGENT_BOOTSTRAP={BOOTSTRAP_FILE}",
        f"Environment=RM_AGENT_SETTINGS_FILE={SETTINGS_FILE}",
        f"ExecStart={python} -m agents.main",
        "KillSignal=SIGTERM",  # Celery's warm shutdown: no new task, running ones finish
        f"TimeoutStopSec={stop_s}",
        "Restart=on-failure",
        "RestartSec=5",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ])


def bootstrap_document(enrolment: Enrolment) -> dict[str, str]:
    """The bootstrap file's content: no secret beyond the one-time token."""
    document = {"api_url": enrolment.api_url, "node_id": enrolment.node_id, "token": enrolment.token}
    if enrolment.ca_bundle_pem:
        document["ca_bundle_pem"] = enrolment.ca_bundle_pem
    return document


def render_user_data(config: BootstrapConfig, enrolment: Enrolment, limit: int | None = None) -> str:
    """The ``#cloud-config`` document for one node; raises :class:`UserDataTooLarge`."""
    venv = f"{config.prefix}/venv"
    document = {
        "package_update": bool(config.os_packages),
        "packages": list(config.os_packages),
        "write_files": [
            {"path": BOOTSTRAP_FILE, "permissions": "0600", "owner": "root:root",
             "content": json.dumps(bootstrap_document(enrolment), indent=1) + "\n"},
            {"path": f"/etc/systemd/system/{UNIT_NAME}", "permissions": "0644", "content": _unit(config, enrolment)},
        ],
        "runcmd": [
            *_install_commands(config, venv),
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", UNIT_NAME],
        ],
    }
    if not config.os_packages:
        del document["packages"]
    text = "#cloud-config\n" + yaml.safe_dump(document, sort_keys=False, width=1000)
    size, cap = len(text.encode()), min(limit or config.size_limit, config.size_limit)
    if size > cap:
        raise UserDataTooLarge(f"the cloud-init for node {enrolment.node_id} is {size} bytes, over the "
                               f"{cap}-byte user-data limit")
    return text


def read_bootstrap_file(user_data: str) -> dict[str, str] | None:
    """The bootstrap file a cloud-init document writes (tests' fake VMs boot from it)."""
    if not user_data.startswith("#cloud-config"):
        return None
    for entry in (yaml.safe_load(user_data) or {}).get("write_files", []):
        if entry.get("path") == BOOTSTRAP_FILE:
            return json.loads(entry["content"])
    return None
