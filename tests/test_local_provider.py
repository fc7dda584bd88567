"""The local provider with real agent processes on a real (embedded) Redis."""

from __future__ import annotations

from dataclasses import replace

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis

from agents.app import make_app
from agents.main import SETTINGS_ENV
from agents.settings import AgentSettings
from providers.base import CloudState, LaunchRequest, PoolSpec
from providers.local import LocalProvider
from rm.demand import queue_for
from tests.helpers import group_members, kill_group, redis_client, redis_url, wait_until  # noqa: F401 - fixtures

CLUSTER = "lptest"
ONPREM = PoolSpec(name="onprem", cluster=CLUSTER, slots=2)
BURST = PoolSpec(name="burst", cluster=CLUSTER, slots=2)


def settings_for(node_id: str, url: str, pool: PoolSpec = ONPREM) -> AgentSettings:
    return AgentSettings(node_id=node_id, pool=pool.name, cluster=CLUSTER, broker_url=url,
                         queues=(queue_for(CLUSTER, ()),), slots=pool.slots)


def agent_leaders(node_id: str) -> list[psutil.Process]:
    """Agent processes leading their own group whose settings name ``node_id`` (however they were started)."""
    leaders = []
    for process in psutil.process_iter(["pid", "status"]):
        try:
            if process.info["status"] == psutil.STATUS_ZOMBIE or os.getpgid(process.pid) != process.pid:
                continue
            raw = process.environ().get(SETTINGS_ENV)
        except (ProcessLookupError, psutil.Error):
            continue
        if raw and json.loads(raw).get("node_id") == node_id:
            leaders.append(process)
    return leaders


def node_of(provider: LocalProvider, pool: PoolSpec, node_id: str):  # noqa: ANN201 - CloudNode | None
    return next((n for n in provider.list_nodes(pool) if n.node_id == node_id), None)


def wait_ready(provider: LocalProvider, settings: AgentSettings) -> None:
    log = provider.log_path(settings.node_id)
    wait_until(lambda: f"{settings.worker_name} ready." in log.read_text(errors="replace"),
               lambda: f"agent {settings.node_id} never became ready:\n{log.read_text(errors='replace')}")


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """The provider's state directory; every process group recorded there is killed at teardown."""
    try:
        yield tmp_path
    finally:
        for record in (tmp_path / "local" / CLUSTER).glob("*.json"):
            try:
                kill_group(json.loads(record.read_text())["pid"])
            except (OSError, ValueError, KeyError):
                pass
        for node_id in ("lp-1", "lp-2", "lp-3"):
            for leader in agent_leaders(node_id):  # belt and braces: anything this module started
                kill_group(leader.pid)


@pytest.fixture
def provider(state_dir: Path) -> Iterator[LocalProvider]:
    provider = LocalProvider(state_dir, CLUSTER)
    try:
        yield provider
    finally:
        for pool in (ONPREM, BURST):
            provider.terminate(pool, [n.node_id for n in provider.list_nodes(pool)])
        provider.close()


def test_launch_list_relaunch_and_terminate_the_whole_tree(
    provider: LocalProvider, redis_url: str, redis_client: redis.Redis,  # noqa: F811
) -> None:
    settings = settings_for("lp-1", redis_url)
    [result] = provider.launch(ONPREM, [LaunchRequest(settings.node_id, settings)])
    assert result.ok and result.node_id == "lp-1" and result.provider_ref
    wait_ready(provider, settings)

    node = node_of(provider, ONPREM, "lp-1")
    assert node is not None, provider.list_nodes(ONPREM)
    assert node.state == CloudState.RUNNING and node.pool == "onprem"
    assert node.provider_ref == result.provider_ref
    assert node_of(provider, BURST, "lp-1") is None  # only this pool's nodes
    assert provider.list_nodes(BURST) == []

    [leader] = agent_leaders("lp-1")
    assert node.extra["pid"] == leader.pid
    members = group_members(leader.pid)
    assert len(members) >= 1 + settings.slots, f"expected the agent and its {settings.slots} pool processes"

    # a retried launch of the same node id is idempotent: same process, no second agent
    [again] = provider.launch(ONPREM, [LaunchRequest(settings.node_id, settings)])
    assert again.ok and again.provider_ref == result.provider_ref
    assert [p.pid for p in agent_leaders("lp-1")] == [leader.pid]
    assert len(provider.list_nodes(ONPREM)) == 1

    provider.terminate(ONPREM, ["lp-1"])
    assert not leader.is_running() or leader.status() == psutil.STATUS_ZOMBIE
    assert group_members(leader.pid) == [], "processes of the node's group survived terminate"
    assert node_of(provider, ONPREM, "lp-1") is None
    provider.terminate(ONPREM, ["lp-1", "never-launched"])  # already gone: not an error


def test_killed_leader_shows_terminated_and_terminate_reaps_orphans(
    provider: LocalProvider, state_dir: Path, redis_url: str, redis_client: redis.Redis,  # noqa: F811
) -> None:
    settings = replace(settings_for("lp-2", redis_url), task_modules=("tests.agent_tasks",))
    [result] = provider.launch(ONPREM, [LaunchRequest(settings.node_id, settings)])
    assert result.ok
    wait_ready(provider, settings)
    [leader] = agent_leaders("lp-2")
    pgid = leader.pid

    # a task that starts a subprocess of its own: Celery's pool processes die with their parent
    # (PDEATHSIG), but the task's own child survives it as an orphan in the node's group
    app = make_app(redis_url)
    try:
        task = app.send_task("test.spawn_sleeper", kwargs={"seconds": 120}, queue=settings.queues[0])
        wait_until(lambda: task.state == "STARTED", lambda: f"the task never started (state {task.state})")
        wait_until(lambda: any(p.name() == "sleep" for p in leader.children(recursive=True)),
                   "the task's subprocess never started")
    finally:
        app.close()

    os.kill(pgid, signal.SIGKILL)  # the leader only
    wait_until(lambda: not leader.is_running() or leader.status() == psutil.STATUS_ZOMBIE,
               "the leader survived SIGKILL")
    wait_until(lambda: [p for p in group_members(pgid) if p.name() == "sleep"],
               "precondition: the task's subprocess should outlive the agent")

    # a restarted manager (fresh instance, the leader is an unreaped zombie) and the launching one agree
    restarted = LocalProvider(state_dir, CLUSTER)
    assert node_of(restarted, ONPREM, "lp-2").state == CloudState.TERMINATED
    assert node_of(provider, ONPREM, "lp-2").state == CloudState.TERMINATED

    provider.terminate(ONPREM, ["lp-2"])
    wait_until(lambda: group_members(pgid) == [],
               lambda: f"orphans of the group survived terminate: {group_members(pgid)}")
    assert node_of(provider, ONPREM, "lp-2") is None


def test_restarted_manager_finds_its_running_node(
    provider: LocalProvider, state_dir: Path, redis_url: str, redis_client: redis.Redis,  # noqa: F811
) -> None:
    settings = settings_for("lp-3", redis_url, BURST)
    [result] = provider.launch(BURST, [LaunchRequest(settings.node_id, settings)])
    assert result.ok
    wait_ready(provider, settings)
    [leader] = agent_leaders("lp-3")

    restarted = LocalProvider(state_dir, CLUSTER)  # same state dir: the records are our "tags"
    node = node_of(restarted, BURST, "lp-3")
    assert node is not None and node.state == CloudState.RUNNING and node.extra["pid"] == leader.pid
    assert restarted.list_nodes(ONPREM) == []

    [again] = restarted.launch(BURST, [LaunchRequest(settings.node_id, settings)])  # a retried launch after the restart
    assert again.ok and again.provider_ref == result.provider_ref
    assert [p.pid for p in agent_leaders("lp-3")] == [leader.pid]

    restarted.terminate(BURST, ["lp-3"])
    wait_until(lambda: group_members(leader.pid) == [], "the node's processes survived terminate")
    assert restarted.list_nodes(BURST) == []
    assert provider.list_nodes(BURST) == []


def test_an_agent_does_not_inherit_the_managers_api_tokens_or_cloud_credentials(
    provider: LocalProvider, redis_url: str, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    monkeypatch.setenv("RM_ADMIN_TOKEN", "admin-secret-" + "x" * 24)
    monkeypatch.setenv("RM_TOKEN", "cli-secret-" + "y" * 24)
    secrets = {"AZURE_CLIENT_SECRET": "az", "OS_PASSWORD": "os", "AWS_SECRET_ACCESS_KEY": "aws", "MY_EC2_SECRET": "ec2"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    settings = settings_for("lp-3", redis_url)
    [result] = provider.launch(ONPREM, [LaunchRequest(settings.node_id, settings)])
    assert result.ok
    [leader] = wait_until(lambda: agent_leaders("lp-3"), "the agent process to start")
    environ = leader.environ()
    assert "RM_ADMIN_TOKEN" not in environ and "RM_TOKEN" not in environ
    assert not set(secrets) & set(environ), "a cloud credential reached the agent"
    assert environ.get("PATH") == os.environ["PATH"], "the rest of the environment is kept"
