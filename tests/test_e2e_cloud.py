"""End to end through the real cloud SDKs: the manager bursts into a fake cloud whose VMs really boot.

Each fake serves its cloud's HTTP API on loopback (``tests/fakes``); a VM that turns running
starts a real agent from the bootstrap file in its cloud-init (``tests/fakes/vm.py``), which
enrols over the API with its one-time token and pulls tasks from the real broker. Nothing of
ours is mocked: the controller, the provider drivers, the SDKs, the agents and the broker run.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rm.broker import free_port
from rm.config import ClusterConfig, parse_config
from tests.e2e_support import RMCTL, Running, healthy, wait_for
from tests.fakes.common import CloudUnderTest, Fault, FakeVm
from tests.fakes.vm import VmRunner
from tests.test_provider_conformance import FAKES

pytestmark = pytest.mark.e2e

PREBUILT = {"install": "none", "os_packages": []}  # the fake VM "image" already has our package


@contextmanager
def fake_cloud(name: str, tmp_path: Path, boot_agents: bool = True) -> Iterator[tuple[CloudUnderTest, VmRunner | None]]:
    with importlib.import_module(FAKES[name]).start(tmp_path) as cloud:
        runner = VmRunner(cloud.state, tmp_path / "vms") if boot_agents else None
        try:
            yield cloud, runner
        finally:
            if runner is not None:
                runner.stop_all()


def cloud_pool(cloud: CloudUnderTest, **overrides: Any) -> dict[str, Any]:
    return {"name": "burst", "provider": cloud.name, "priority": 10, "slots": 2, "min_nodes": 0, "max_nodes": 3,
            "price_per_hour": 0.40, "boot_timeout_s": 90, "settings": cloud.settings, "bootstrap": PREBUILT,
            "list_interval_s": 1,
            **overrides}


def cluster_config(tmp: Path, pools: list[dict[str, Any]], port: int = 0, **policy: Any) -> ClusterConfig:
    return parse_config({
        "cluster": "demo", "database": f"sqlite:///{tmp}/rm.db", "broker": "embedded",
        "state_dir": str(tmp / "state"), "api": {"host": "127.0.0.1", "port": port},
        "policy": {"tick_s": 1, "idle_timeout_s": 3, "scale_down_ticks": 2, **policy},
        "pools": [{"name": "onprem", "provider": "local", "priority": 0, "slots": 2, "min_nodes": 1, "max_nodes": 1,
                   "labels": ["onprem"]}, *pools],
    }, "test")


def sleepers(count: int, seconds: float = 2) -> dict[str, Any]:
    return {"name": "burst-me", "tasks": [{"name": "s", "run": "builtin.sleep", "args": {"seconds": seconds},
                                            "replicate": count}]}


def created_once(cloud: CloudUnderTest) -> None:
    doubled = {name: n for name, n in Counter(cloud.state.create_calls).items() if n > 1}
    assert not doubled, f"VMs created twice for the same node id: {doubled}"


@pytest.mark.parametrize("provider", sorted(FAKES))
def test_a_burst_runs_on_cloud_vms_that_enrol_and_are_given_back(tmp_path: Path, provider: str) -> None:
    with fake_cloud(provider, tmp_path) as (cloud, runner):
        running = Running(cluster_config(tmp_path, [cloud_pool(cloud)]))
        try:
            wait_for("the on-prem node", lambda: running.ready("onprem"), timeout_s=60)
            job = running.finished_job(running.client.post("/api/v1/jobs", sleepers(12))["id"])
            assert job["state"] == "succeeded", job
            burst_nodes = {t["node"] for t in job["tasks"] if t["node"].startswith("burst-")}
            assert burst_nodes, "no task ran on a cloud VM"
            assert burst_nodes <= set(runner.booted), "a task ran on a VM the fake cloud never booted"
            enrolled = {e["node"] for e in running.events(kind="enrolled")}
            assert burst_nodes <= enrolled, "a cloud agent ran without enrolling"
            assert not running.events(kind="enrol-refused")

            wait_for("the burst pool back to 0", lambda: not running.live("burst"), timeout_s=120)
            wait_for("every cloud VM deleted", lambda: not cloud.state.names(), timeout_s=60)
            assert set(cloud.state.delete_calls) == set(cloud.state.create_calls)
            created_once(cloud)
            assert all(n.status == "terminated" for n in running.node_rows() if n.pool == "burst")
            assert all(e["cause"] == "idle" for e in running.events(kind="drain") if e["pool"] == "burst")
            assert not runner.running(), "an agent outlived its VM"
        finally:
            running.stop()


def test_quota_errors_back_off_and_demand_falls_to_the_next_pool(tmp_path: Path) -> None:
    with fake_cloud("openstack", tmp_path) as (cloud, _runner):
        cloud.state.inject("create", Fault.QUOTA, times=50)
        fallback = {"name": "spare", "provider": "local", "priority": 20, "slots": 2, "min_nodes": 0, "max_nodes": 3}
        running = Running(cluster_config(tmp_path, [cloud_pool(cloud), fallback]))
        try:
            wait_for("the on-prem node", lambda: running.ready("onprem"), timeout_s=60)
            job = running.finished_job(running.client.post("/api/v1/jobs", sleepers(10))["id"])
            assert job["state"] == "succeeded", job
            failed = [e for e in running.events(kind="launch-failed") if e["pool"] == "burst"]
            assert failed and all(e["cause"] == "quota" for e in failed)
            assert "quota" in failed[0]["message"].lower() and "waits 5 s" in failed[0]["message"]
            fell = [e for e in running.events(kind="refused") if e["cause"] == "backoff" and e["pool"] == "burst"]
            assert fell and "fall through to the next pool" in fell[0]["message"]
            assert any(t["node"].startswith("spare-") for t in job["tasks"]), "the fallback pool ran nothing"
            assert [e for e in running.events(kind="launch") if e["pool"] == "spare"]
            assert not cloud.state.names(), "a refused launch left a VM behind"
        finally:
            running.stop()


def test_a_vm_that_never_registers_and_an_orphan_are_both_destroyed(tmp_path: Path) -> None:
    with fake_cloud("openstack", tmp_path, boot_agents=False) as (cloud, _):
        orphan = FakeVm(ref="orphan-ref-1", name="burst-0rphan", user_data="", state="running",
                        tags={"hybrid-rm-cluster": "demo", "hybrid-rm-pool": "burst", "hybrid-rm-node": "burst-0rphan"})
        with cloud.state.lock:
            cloud.state.vms[orphan.ref] = orphan
        foreign = cloud.add_foreign_vm("someone-elses", {"team": "web"})
        pool = cloud_pool(cloud, min_nodes=1, max_nodes=1, boot_timeout_s=4)
        running = Running(cluster_config(tmp_path, [pool], orphan_grace_s=3))
        try:
            found = wait_for("the orphan noticed", lambda: running.events(kind="orphan"), timeout_s=60)[0]
            assert found["node"] == "burst-0rphan" and "unknown to the store" in found["message"]
            destroyed = wait_for("the orphan destroyed", lambda: [e for e in running.events(kind="terminate")
                                                                   if e["cause"] == "orphan"], timeout_s=60)[0]
            assert destroyed["node"] == "burst-0rphan"
            wait_for("the orphan VM gone", lambda: "burst-0rphan" not in cloud.state.names(), timeout_s=30)

            timeout = wait_for("a boot timeout", lambda: running.events(kind="boot-timeout"), timeout_s=60)[0]
            stuck = timeout["node"]
            assert "did not register within boot_timeout_s" in timeout["message"]
            wait_for("the stuck VM deleted", lambda: stuck in cloud.state.delete_calls, timeout_s=60)
            assert {n.id: n.status for n in running.node_rows()}[stuck] == "failed"
            assert foreign.ref in cloud.state.vms, "a VM that is not ours was touched"
            created_once(cloud)
        finally:
            running.stop()


def test_manager_killed_mid_launch_restarts_without_leak_or_double_launch(tmp_path: Path) -> None:
    with fake_cloud("openstack", tmp_path) as (cloud, runner):
        cloud.state.create_delay_s = 4.0  # the cloud creates the VM, then answers slowly: the manager dies meanwhile
        port = free_port()
        config = cluster_config(tmp_path, [cloud_pool(cloud, max_nodes=2)], port=port).model_dump(mode="json")
        path = tmp_path / "cluster.yaml"
        path.write_text(yaml.safe_dump(config))
        base = f"http://127.0.0.1:{port}"
        env = {**os.environ, **cloud.env}

        def up() -> subprocess.Popen:
            log = open(tmp_path / "rmctl-up.log", "ab")  # noqa: SIM115 - handed to the child
            return subprocess.Popen([*RMCTL, "up", "--config", str(path)], cwd=tmp_path, env=env,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

        first = up()
        second = None
        try:
            wait_for("the manager to answer", lambda: healthy(base), timeout_s=60)
            headers = {"Authorization": f"Bearer {(tmp_path / 'state' / 'token').read_text().strip()}"}
            job_id = httpx.post(f"{base}/api/v1/jobs", json=sleepers(10), headers=headers).json()["id"]
            wait_for("a VM created, its create call not yet answered", lambda: cloud.state.create_calls, timeout_s=60)
            interrupted = cloud.state.create_calls[0]
            os.killpg(first.pid, signal.SIGKILL)  # the manager dies mid-launch; the fake cloud goes on
            first.wait(timeout=30)

            second = up()
            wait_for("the restarted manager to answer", lambda: healthy(base), timeout_s=60)
            job = wait_for("the job to finish", lambda: (j := httpx.get(f"{base}/api/v1/jobs/{job_id}", headers=headers)
                                                         .json())["state"] in ("succeeded", "failed") and j, timeout_s=240)
            assert job["state"] == "succeeded", job
            created_once(cloud)
            adopted = httpx.get(f"{base}/api/v1/nodes/{interrupted}", headers=headers).json()
            reasons = [h["reason"] for h in adopted["history"]]
            assert "found in the cloud after a manager restart" in reasons, reasons
            assert "idle" in [h["to"] for h in adopted["history"]], "the adopted VM's agent never registered"
            wait_for("every cloud VM given back", lambda: not cloud.state.names(), timeout_s=120)
            nodes = httpx.get(f"{base}/api/v1/nodes", params={"all": "true"}, headers=headers).json()
            assert all(n["state"] in ("terminated", "failed", "lost") for n in nodes if n["pool"] == "burst")
            assert len(set(cloud.state.create_calls)) <= 2 + len([n for n in nodes if n["state"] in ("failed", "lost")])
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.send_signal(signal.SIGTERM)
                    try:
                        process.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
        assert not runner.running(), "an agent outlived its VM"


def test_a_hung_cloud_never_stalls_the_loop_or_the_other_pools(tmp_path: Path) -> None:
    with fake_cloud("openstack", tmp_path) as (cloud, _runner):
        cloud.state.create_delay_s = 10.0  # the cloud takes every create and answers 10 s later
        pool = cloud_pool(cloud, settings={**cloud.settings, "request_timeout_s": 60})
        running = Running(cluster_config(tmp_path, [pool]))
        try:
            wait_for("the on-prem node", lambda: running.ready("onprem"), timeout_s=60)
            controller, actuator = running.runtime.controller, running.runtime.actuator
            job_id = running.client.post("/api/v1/jobs", sleepers(6, seconds=1))["id"]
            wait_for("a launch hung in the cloud", lambda: actuator.busy("launch", "burst"), timeout_s=60)
            hung_at = controller.ticks
            wait_for("three more ticks", lambda: controller.ticks >= hung_at + 3, timeout_s=60)
            assert actuator.busy("launch", "burst"), "the create call should still be hanging"
            job = running.finished_job(job_id)
            assert job["state"] == "succeeded" and controller.errors == 0
            assert any(t["node"].startswith("onprem-") for t in job["tasks"])
        finally:
            running.stop()


def test_a_launch_interrupted_before_the_cloud_saw_it_is_resumed_with_the_same_node_id(tmp_path: Path) -> None:
    from rm.lifecycle import change_status, create_node
    from rm.models import Node
    from rm.states import NodeStatus
    from rm.store import Store

    with fake_cloud("openstack", tmp_path) as (cloud, runner):
        config = cluster_config(tmp_path, [cloud_pool(cloud)], idle_timeout_s=600)
        store = Store(config.database)  # what a manager killed right after committing its launch left behind
        store.upgrade_schema()
        with store.session() as session:
            for node_id, extra in (("burst-c4a5h1", {}), ("burst-c4a5h2", {"relaunched": 1.0})):
                node = Node(id=node_id, cluster="demo", pool="burst", provider="openstack", slots=2, labels=[],
                            worker=f"{node_id}@demo", extra=extra)
                create_node(session, node, "launch 1 node(s) in pool burst: (before the crash)", 1.0)
                change_status(session, node, NodeStatus.PROVISIONING, "launch handed to the provider", 1.0)
        store.dispose()

        running = Running(config)
        try:
            resumed = wait_for("the interrupted launch resumed", lambda: [
                e for e in running.events(kind="launch") if e["cause"] == "resumed"], timeout_s=60)
            assert [e["node"] for e in resumed] == ["burst-c4a5h1"]
            wait_for("the resumed node registered", lambda: [n for n in running.ready("burst") if n["id"] == "burst-c4a5h1"],
                     timeout_s=90)
            assert cloud.state.create_calls == ["burst-c4a5h1"], "resumed under a new id, or launched twice"
            twice = {n.id: n for n in running.node_rows()}["burst-c4a5h2"]
            assert twice.status == "failed" and "interrupted twice" in twice.status_reason
            assert runner.booted == ["burst-c4a5h1"]
        finally:
            running.stop()
