"""Two (or more) ``rmctl up`` instances on one database and one broker, for the HA test and bench.

Why a module of its own: ``tests/test_ha.py`` and ``bench/failover.py`` run the same failover,
and a figure in the README must come from the code the test checks. Every instance shares the
state directory (local agents are processes on this machine, found by their pid files whoever
launched them) and an admin token given through ``RM_ADMIN_TOKEN``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select

from rm.broker import EmbeddedRedis, free_port
from rm.models import Node, Task
from rm.store import Store
from tests.e2e_support import healthy, issue_config, start_rmctl_up, wait_for

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@contextmanager
def temporary_postgres_database() -> Iterator[str]:
    """A fresh PostgreSQL database (for the bench; the tests use conftest's ``postgres_url``)."""
    import psycopg

    name = f"rm_ha_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Instance:
    """One ``rmctl up`` process and its API."""

    def __init__(self, name: str, process: subprocess.Popen, base: str, token: str) -> None:
        self.name = name
        self.process = process
        self.base = base
        self._headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.base}{path}", params=params, headers=self._headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any) -> Any:
        response = httpx.post(f"{self.base}{path}", json=body, headers=self._headers, timeout=10)
        response.raise_for_status()
        return response.json()

    def send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """Any request, its response returned as it is (refusals included)."""
        return httpx.request(method, f"{self.base}{path}", json=body, headers=self._headers, timeout=10)

    def leader(self) -> dict[str, Any]:
        return self.get("/api/v1/status")["leader"]

    def events(self, kind: str) -> list[dict[str, Any]]:
        return self.get("/api/v1/events", kind=kind, limit=2000)

    def submit(self, name: str, count: int, seconds: float) -> str:
        job = {"name": name, "tasks": [{"name": "s", "run": "builtin.sleep", "args": {"seconds": seconds},
                                        "replicate": count}]}
        return self.post("/api/v1/jobs", job)["id"]

    def alive(self) -> bool:
        return self.process.poll() is None


class HaPair:
    """Instances of the issue's cluster with ``ha.enabled``, a redis-server and a pool-size sampler."""

    def __init__(self, tmp: Path, database: str, tick_s: float = 1.0) -> None:
        self.tmp = tmp
        self.database = database
        self.tick_s = tick_s
        self.token = secrets.token_urlsafe(24)
        self.instances: dict[str, Instance] = {}
        self.peak: dict[str, int] = {"onprem": 0, "burst": 0}
        self._broker = EmbeddedRedis(tmp / "broker")
        self._halt = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "HaPair":
        self.broker_url = self._broker.start()
        self._sampler.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._halt.set()
        self._sampler.join(10)
        for name in [n for n, i in self.instances.items() if i.alive()]:
            self.stop(name)
        self._broker.stop()

    # -- instances -------------------------------------------------------------------------
    def start(self, name: str) -> Instance:
        """Start (or restart) instance ``name`` and wait for its API."""
        config = issue_config(self.tmp, database=self.database, tick_s=self.tick_s).model_dump(mode="json")
        config.update(broker=self.broker_url, ha={"enabled": True, "instance_id": name})
        config["api"]["port"] = free_port()
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        env = {**os.environ, "RM_ADMIN_TOKEN": self.token}
        with open(self.tmp / f"{name}.log", "ab") as log:
            process = start_rmctl_up(path, self.tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
        instance = Instance(name, process, f"http://127.0.0.1:{config['api']['port']}", self.token)
        self.instances[name] = instance
        wait_for(f"instance {name}'s API", lambda: healthy(instance.base) or not instance.alive(), timeout_s=60)
        assert instance.alive(), f"instance {name} exited: see {self.tmp / f'{name}.log'}"
        return instance

    def kill(self, name: str) -> float:
        """SIGKILL instance ``name`` (its agents live on, as after a host's manager crash); returns when."""
        process = self.instances[name].process
        process.send_signal(signal.SIGKILL)
        at = time.time()
        process.wait(timeout=30)
        return at

    def pause(self, name: str) -> float:
        """SIGSTOP instance ``name`` (a long GC pause, a frozen VM); returns when."""
        self.instances[name].process.send_signal(signal.SIGSTOP)
        return time.time()

    def resume(self, name: str) -> None:
        self.instances[name].process.send_signal(signal.SIGCONT)

    def stop(self, name: str) -> None:
        process = self.instances[name].process
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)  # a paused instance must be able to stop
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    def live(self) -> list[Instance]:
        return [i for i in self.instances.values() if i.alive()]

    # -- what the database says --------------------------------------------------------------
    def _rows(self, query: Any) -> list[Any]:
        store = Store(self.database)
        try:
            with store.session() as session:
                return list(session.scalars(query))
        finally:
            store.dispose()

    def node_rows(self) -> list[Node]:
        return self._rows(select(Node))

    def completions(self, job_id: str) -> dict[int, int]:
        """How many of the job's tasks recorded their result 0, 1, 2... times (exactly once: ``{1: n}``)."""
        counts: dict[int, int] = {}
        for task in self._rows(select(Task).where(Task.job_id == job_id)):
            counts[task.completions] = counts.get(task.completions, 0) + 1
        return counts

    def _sample(self) -> None:
        """The peak number of live nodes per pool, read through any live instance's API."""
        while not self._halt.wait(0.3):
            for instance in self.live():
                try:
                    nodes = instance.get("/api/v1/nodes")
                except httpx.HTTPError:
                    continue
                for pool in self.peak:
                    self.peak[pool] = max(self.peak[pool], sum(1 for n in nodes if n["pool"] == pool))
                break
