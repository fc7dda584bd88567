"""The local provider: a node is an agent process on this machine.

Why it exists: it lets an on-premises pool and a "cloud" burst pool run side by side on one
laptop with real agents, real Celery and a real broker, and it is the on-prem driver for
machines where the manager itself runs the agents. Each node is a process group whose record
(pid, start time) sits in a file under the state directory, so a restarted manager finds its
nodes again (our "tags") and pid reuse cannot fool it. Destroy ends the whole process tree.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from agents.main import SETTINGS_ENV
from agents.settings import AgentSettings
from pydantic import BaseModel, ConfigDict

from providers.base import CloudNode, CloudState, LaunchErrorKind, LaunchRequest, LaunchResult, PoolSpec, Provider

log = logging.getLogger("providers.local")
#: The manager's secrets: its API tokens and the cloud credentials its drivers read from the
#: environment (``client_secret_env``, ``secret_env``, OpenStack's ``OS_PASSWORD``...). An agent
#: needs none of them, and the task code it runs could read them.
SECRET_ENV = re.compile(r"TOKEN|SECRET|PASSW|CREDENTIAL|PRIVATE|ACCESS_KEY|API_KEY|^AZURE_|^AWS_|^OS_|^GOOGLE_", re.I)


def agent_environment(environ: dict[str, str]) -> dict[str, str]:
    """The manager's environment without its secrets, for a local agent."""
    return {name: value for name, value in environ.items() if not SECRET_ENV.search(name)}

TERM_GRACE_S = 20.0
PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)  # where `agents` is importable from


class Settings(BaseModel):
    """The local provider takes no settings: a node is an agent process on this machine."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LocalProvider(Provider):
    name = "local"

    def __init__(self, state_dir: str | Path, cluster: str) -> None:
        self.root = Path(state_dir) / "local" / cluster
        self.root.mkdir(parents=True, exist_ok=True)
        self._children: dict[str, subprocess.Popen] = {}

    # -- records ---------------------------------------------------------------------------
    def _record_path(self, node_id: str) -> Path:
        return self.root / f"{node_id}.json"

    def log_path(self, node_id: str) -> Path:
        return self.root / f"{node_id}.log"

    def _read(self, path: Path) -> dict | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def _process(self, record: dict) -> psutil.Process | None:
        """The node's live process, or None if it is gone (or its pid was reused)."""
        child = self._children.get(record["node_id"])
        if child is not None and child.poll() is not None:
            return None
        try:
            process = psutil.Process(record["pid"])
            if abs(process.create_time() - record["create_time"]) > 1.0:
                return None
            if process.status() == psutil.STATUS_ZOMBIE:
                return None
            return process
        except psutil.Error:
            return None

    # -- the interface ---------------------------------------------------------------------
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        return [self._launch_one(pool, request.agent) for request in requests]

    def _launch_one(self, pool: PoolSpec, agent: AgentSettings) -> LaunchResult:
        existing = self._read(self._record_path(agent.node_id))
        if existing and self._process(existing):
            return LaunchResult(agent.node_id, True, provider_ref=f"pid:{existing['pid']}")
        env = agent_environment(dict(os.environ))
        env[SETTINGS_ENV] = agent.to_json()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
        try:
            with open(self.log_path(agent.node_id), "ab") as out:
                child = subprocess.Popen(
                    [sys.executable, "-m", "agents.main"],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: destroy ends the whole tree
                )
        except OSError as error:
            return LaunchResult(agent.node_id, False, error_kind=LaunchErrorKind.CONFIG, error=str(error))
        self._children[agent.node_id] = child
        record = {
            "node_id": agent.node_id,
            "pool": pool.name,
            "cluster": pool.cluster,
            "pid": child.pid,
            "create_time": psutil.Process(child.pid).create_time(),
            "launched_at": time.time(),
        }
        self._record_path(agent.node_id).write_text(json.dumps(record))
        return LaunchResult(agent.node_id, True, provider_ref=f"pid:{child.pid}")

    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        nodes = []
        for path in sorted(self.root.glob("*.json")):
            record = self._read(path)
            if not record or record.get("pool") != pool.name:
                continue
            alive = self._process(record) is not None
            nodes.append(
                CloudNode(
                    node_id=record["node_id"],
                    pool=pool.name,
                    provider_ref=f"pid:{record['pid']}",
                    state=CloudState.RUNNING if alive else CloudState.TERMINATED,
                    extra={"pid": record["pid"], "log": str(self.log_path(record["node_id"]))},
                )
            )
        return nodes

    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        for node_id in node_ids:
            self._terminate_one(node_id)

    def _terminate_one(self, node_id: str) -> None:
        path = self._record_path(node_id)
        record = self._read(path)
        if record is not None:
            leader = self._process(record)
            if leader is not None:
                leader.send_signal(signal.SIGTERM)  # Celery warm shutdown: ends its pool children
            members = _group_members(record)
            _, alive = psutil.wait_procs(members, timeout=TERM_GRACE_S if leader else 0.5)
            for process in alive:
                log.warning("node=%s pid %s still running after SIGTERM; killing it", node_id, process.pid)
                _kill(process)
            psutil.wait_procs(alive, timeout=5)
        child = self._children.pop(node_id, None)
        if child is not None:
            child.wait(timeout=TERM_GRACE_S)
        path.unlink(missing_ok=True)

    def close(self) -> None:
        for child in self._children.values():
            if child.poll() is None:
                log.warning("local agent pid %s still running at provider close", child.pid)


def _group_members(record: dict) -> list[psutil.Process]:
    """Every process of the node's process group, even if its leader already died.

    The start-time check keeps a recycled pid or group id from pointing at a stranger.
    """
    members = []
    for process in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(process.pid) == record["pid"] and process.info["create_time"] >= record["create_time"] - 1:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _kill(process: psutil.Process) -> None:
    try:
        process.kill()
    except psutil.Error:
        pass


PROVIDER = LocalProvider
