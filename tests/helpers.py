"""Shared helpers for the broker/agent tests: an embedded Redis, real agent processes, bounded polls.

Nothing here replaces our own code: the broker is the real ``redis-server`` started by
:class:`rm.broker.EmbeddedRedis` on a free port (never the shared 6379), and an agent is the real
``python -m agents.main`` process in its own process group, exactly as a provider starts it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import psutil
import pytest
import redis

from agents.main import SETTINGS_ENV
from agents.settings import AgentSettings
from rm.broker import EmbeddedRedis

REPO_ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 60.0  # upper bound of every poll: generous, never asserted as a performance limit

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], message: str | Callable[[], str], timeout_s: float = WAIT_S,
               interval_s: float = 0.1) -> T:
    """Poll ``predicate`` until it returns a truthy value (returned); fail clearly after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"gave up after {timeout_s:.0f} s: {text}", pytrace=False)
        time.sleep(interval_s)


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Our own redis-server for the module (never 127.0.0.1:6379); stopped at teardown."""
    server = EmbeddedRedis(tmp_path_factory.mktemp("broker"))
    url = server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on an emptied database: each test starts from a clean broker."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    try:
        yield client
    finally:
        client.close()


def group_members(pgid: int) -> list[psutil.Process]:
    """Live (non-zombie) processes whose process group is ``pgid``."""
    members = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class Agent:
    """A real agent process (``python -m agents.main``) in its own process group, logging to a file."""

    def __init__(self, settings: AgentSettings, log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        env = dict(os.environ)
        env[SETTINGS_ENV] = settings.to_json()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        with open(log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "agents.main"], env=env, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    @property
    def pgid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_ready(self) -> None:
        ready = f"{self.settings.worker_name} ready."

        def _ready() -> bool:
            if self.process.poll() is not None:
                pytest.fail(f"agent {self.settings.node_id} exited with {self.process.returncode}:\n{self.log()}")
            return ready in self.log()

        wait_until(_ready, lambda: f"agent {self.settings.node_id} never logged {ready!r}:\n{self.log()}")

    def kill(self) -> None:
        """SIGKILL the whole process group (a VM that dies) and reap the leader."""
        kill_group(self.pgid)
        self.process.wait(timeout=WAIT_S)
        wait_until(lambda: not group_members(self.pgid), f"process group {self.pgid} survived SIGKILL")

    def stop(self) -> None:
        """Warm shutdown if possible, then make sure nothing of the group remains."""
        if self.process.poll() is None:
            try:
                os.killpg(self.pgid, signal.SIGTERM)
                self.process.wait(timeout=20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        kill_group(self.pgid)
        if self.process.poll() is None:
            self.process.wait(timeout=WAIT_S)


@pytest.fixture
def spawn_agent(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start real agents; every one (and its whole process group) is gone after the test."""
    agents: list[Agent] = []

    def _spawn(settings: AgentSettings, *, wait_ready: bool = True) -> Agent:
        agent = Agent(settings, tmp_path / f"{settings.node_id}.log")
        agents.append(agent)
        if wait_ready:
            agent.wait_ready()
        return agent

    try:
        yield _spawn
    finally:
        for agent in agents:
            agent.stop()
