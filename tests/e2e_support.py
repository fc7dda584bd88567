"""Helpers for the end-to-end tests: a running manager, bounded waits, process bookkeeping."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from sqlalchemy import select

from rm.broker import free_port
from rm.client import ApiClient
from rm.config import ClusterConfig, parse_config
from rm.models import Node, Task
from rm.runtime import Runtime
from tests.workflows import S1_ORTHO  # noqa: F401 - re-exported for the e2e tests and benches



def issue_config(tmp: Path, database: str | None = None, broker: str = "embedded", **policy: Any) -> ClusterConfig:
    """The configuration of the issue, with its files under ``tmp`` and a free API port."""
    return parse_config({
        "cluster": "demo",
        "database": database or f"sqlite:///{tmp}/rm-demo.db",
        "broker": broker,
        "state_dir": str(tmp / "state"),
        "api": {"host": "127.0.0.1", "port": 0},
        "policy": {"tick_s": 1, "load_factor": 1.0, "idle_timeout_s": 10, **policy},
        "pools": [
            {"name": "onprem", "provider": "local", "priority": 0, "slots": 2, "min_nodes": 1, "max_nodes": 1,
             "price_per_hour": 0.0, "labels": ["onprem"]},
            {"name": "burst", "provider": "local", "priority": 10, "slots": 2, "min_nodes": 0, "max_nodes": 4,
             "price_per_hour": 0.40, "boot_delay_s": 2},
        ],
    }, "test")


def wait_for(what: str, predicate: Callable[[], Any], timeout_s: float = 120.0, every_s: float = 0.5) -> Any:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` after a bounded wait."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


class Running:
    """A started runtime with its API and an admin client."""

    def __init__(self, config: ClusterConfig) -> None:
        self.runtime = Runtime(config).start()
        self.url = self.runtime.serve_api()
        self.client = ApiClient(self.url, self.runtime.token_path.read_text().strip())

    def nodes(self, **params: Any) -> list[dict[str, Any]]:
        return self.client.get("/api/v1/nodes", **params)

    def live(self, pool: str) -> list[dict[str, Any]]:
        return [n for n in self.nodes() if n["pool"] == pool]

    def ready(self, pool: str) -> list[dict[str, Any]]:
        return [n for n in self.live(pool) if n["state"] in ("idle", "busy")]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.client.get(f"/api/v1/jobs/{job_id}")

    def finished_job(self, job_id: str, timeout_s: float = 240.0) -> dict[str, Any]:
        return wait_for(f"job {job_id} to finish",
                        lambda: (j := self.job(job_id))["state"] in ("succeeded", "failed", "cancelled") and j,
                        timeout_s=timeout_s)

    def events(self, **params: Any) -> list[dict[str, Any]]:
        return self.client.get("/api/v1/events", limit=2000, **params)

    def task_rows(self, job_id: str) -> list[Task]:
        with self.runtime.store.session() as session:
            return list(session.scalars(select(Task).where(Task.job_id == job_id)))

    def node_rows(self) -> list[Node]:
        with self.runtime.store.session() as session:
            return list(session.scalars(select(Node)))

    def agent_pid(self, node_id: str) -> int:
        import json

        record = Path(self.runtime.state_dir) / "local" / self.runtime.config().cluster / f"{node_id}.json"
        return json.loads(record.read_text())["pid"]

    def stop(self) -> None:
        self.client.close()
        self.runtime.stop()


@contextmanager
def issue_cluster(tmp: Path, broker: str = "embedded", **policy: Any) -> Iterator[Running]:
    """The issue's cluster, running, with its on-prem node registered; stopped on exit."""
    running = Running(issue_config(tmp, broker=broker, **policy))
    try:
        wait_for("the on-prem node to register", lambda: running.ready("onprem"), timeout_s=60)
        yield running
    finally:
        running.stop()


def epoch(iso: str) -> float:
    """An API timestamp (ISO 8601, ``Z``) as epoch seconds."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


RMCTL = [sys.executable, "-m", "rm.cli"]


def write_cluster_file(tmp: Path) -> tuple[Path, str]:
    """The issue's cluster as a YAML file with a free API port; returns the file and the API URL."""
    config = issue_config(tmp).model_dump(mode="json")
    config["api"]["port"] = free_port()
    path = tmp / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, f"http://127.0.0.1:{config['api']['port']}"


def start_rmctl_up(cluster: Path, cwd: Path, **popen: Any) -> subprocess.Popen:
    return subprocess.Popen([*RMCTL, "up", "--config", str(cluster)], cwd=cwd, **popen)


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def still_running(processes: list[psutil.Process]) -> list[str]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
        except psutil.Error:
            continue
    return alive


def processes_under(directory: Path) -> list[str]:
    """Processes whose working directory is inside ``directory`` (what a run there left behind)."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if Path(process.cwd()).is_relative_to(directory) and process.status() != psutil.STATUS_ZOMBIE:
                found.append(f"{process.pid} {' '.join(process.info['cmdline'] or [])[:100]}")
        except (psutil.Error, OSError):
            continue
    return found


class PoolSampler(threading.Thread):
    """Samples the live node count of each pool while a scenario runs (to check max is never passed)."""

    def __init__(self, running: Running) -> None:
        super().__init__(daemon=True)
        self.running = running
        self.peak: dict[str, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.3):
            for pool, by_state in self.running.runtime.controller.status().get("nodes_by_pool", {}).items():
                self.peak[pool] = max(self.peak.get(pool, 0), sum(by_state.values()))

    def stop(self) -> None:
        self._halt.set()
        self.join()
