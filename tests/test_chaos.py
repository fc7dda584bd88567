"""The chaos suite: kill any process of the system and check that nothing is lost, run twice,
leaked or overspent. Every test runs on loopback, starts whatever it kills, and stops by itself.

1. agents SIGKILLed during a 300-task job: every task succeeds, each result is recorded once,
   and the delay before a killed node's tasks run again is measured;
2. the manager SIGKILLed during a scale-up and restarted: no leaked node, no double launch;
3. the broker restarted mid-run and down for 8 s: agents and manager reconnect, nothing is lost,
   nothing runs twice, and no node is taken for lost because the broker was silent;
4. a cloud (the OpenStack fake, through openstacksdk) that fails every other create, list and
   delete with a timeout, a 500 or a quota error: never above max_nodes, never over budget, the
   pool backs off and says so, the job completes and no VM is left;
5. a node that never registers is destroyed after ``boot_timeout_s`` and its pool backs off.
"""

from __future__ import annotations

import logging
from decimal import Decimal
import signal
import subprocess
from pathlib import Path

import psutil
import pytest

from tests.chaos_support import (
    agents_killed_during_a_job,
    completions,
    job_across_a_broker_outage,
    own_broker,
    sleepers,
)
from rm.config import parse_config
from tests.e2e_support import (
    PoolSampler,
    Running,
    epoch,
    healthy,
    issue_cluster,
    processes_under,
    start_rmctl_up,
    still_running,
    wait_for,
    write_cluster_file,
)

from tests.fakes.common import Fault
from tests.test_e2e_cloud import cloud_pool, cluster_config, created_once, fake_cloud

pytestmark = [pytest.mark.chaos, pytest.mark.e2e]

KILL_SEED = 6
OUTAGE_S = 8.0
CLOUD_FAULTS = (Fault.TIMEOUT, Fault.SERVER_ERROR, Fault.QUOTA)
BUDGET_EUR = Decimal("1.20")  # three node-hours of the burst pool


def test_agents_sigkilled_mid_job_lose_nothing_and_record_each_result_once(
        tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    with issue_cluster(tmp_path) as running:
        sampler = PoolSampler(running)
        sampler.start()
        try:
            run = agents_killed_during_a_job(running, tasks=300, seconds=1.0, kills=3, seed=KILL_SEED)
        finally:
            sampler.stop()
        record_property("rerun_delays_s", run.rerun_delays_s)
        print(f"re-run delay after each SIGKILL: {run.rerun_delays_s} s")
        job_id = run.job["id"]
        assert run.job["state"] == "succeeded", run.job["progress"]
        assert completions(running, job_id) == {1: 300}, "a result was lost or recorded twice"
        rows = {row.id: row for row in running.task_rows(job_id)}
        for kill in run.kills:
            held = [(rows[t].node_id, rows[t].attempts) for t in kill.held]
            assert all(node != kill.node and attempts >= 2 for node, attempts in held), \
                f"a task of killed node {kill.node} did not run again elsewhere: {held}"
        assert all(d is not None and d > 0 for d in run.rerun_delays_s), run.rerun_delays_s
        lost = {e["node"] for e in running.events(kind="lost")}
        assert {k.node for k in run.kills} <= lost, "a killed agent was not marked lost"
    assert sampler.peak.get("burst", 0) <= 4 and sampler.peak.get("onprem", 0) <= 1, sampler.peak


def test_broker_restarted_mid_run_loses_nothing_and_loses_no_node(
        tmp_path: Path, record_property: pytest.RecordProperty, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rm.controller")
    with own_broker(tmp_path) as broker, issue_cluster(tmp_path, broker=broker.url) as running:
        run = job_across_a_broker_outage(running, broker, tasks=40, seconds=2.0, down_s=OUTAGE_S)
        record_property("first_task_after_broker_back_s", run.first_start_after_back_s)
        print(f"first task started {run.first_start_after_back_s} s after the broker came back")
        job = run.job
        assert job["state"] == "succeeded", (job["progress"], {t["error"] for t in job["tasks"] if t["error"]})
        assert completions(running, job["id"]) == {1: 40}, "a result was lost or recorded twice"
        assert run.first_start_after_back_s is not None, "no task started after the broker came back"
        assert not running.events(kind="lost"), "a node was taken for lost while the broker was down"
        twice = [(t["name"], t["index"], t["attempts"]) for t in job["tasks"] if t["attempts"] > 1]
        assert not twice, f"tasks ran more than once: {twice}"
        ticks = running.runtime.controller.ticks
        wait_for("the controller ticking", lambda: running.runtime.controller.ticks > ticks + 2, timeout_s=30)
    said = [r.getMessage() for r in caplog.records if r.name == "rm.controller"]
    assert len([m for m in said if "broker is unreachable" in m]) == 1, said
    assert len([m for m in said if "reachable again" in m]) == 1, said


def test_provider_faults_on_half_the_calls_keep_max_and_budget_and_leave_no_vm(tmp_path: Path) -> None:
    with fake_cloud("openstack", tmp_path) as (cloud, _runner):
        cloud.state.inject_every(2, CLOUD_FAULTS)
        pool = cloud_pool(cloud, max_nodes=3, billing={"granularity": "hour"}, release={"before_end_s": 3600})
        config = cluster_config(tmp_path, [pool]).model_dump(mode="json")
        config["budgets"] = {"global": {"period": "month", "amount": str(BUDGET_EUR)}}
        running = Running(parse_config(config, "test"))
        sampler = PoolSampler(running)
        sampler.start()
        try:
            wait_for("the on-prem node", lambda: running.ready("onprem"), timeout_s=60)
            job = running.finished_job(running.client.post("/api/v1/jobs", sleepers("chaos-cloud", 30, 2.0))["id"])
            wait_for("the burst pool back to 0", lambda: not running.live("burst"), timeout_s=120)
            wait_for("every cloud VM deleted", lambda: not cloud.state.names(), timeout_s=120)
            budget = running.client.get("/api/v1/budget")["budgets"][0]
            failed = [e for e in running.events(kind="launch-failed") if e["pool"] == "burst"]
        finally:
            cloud.state.stop_faults()
            sampler.stop()
            running.stop()
        assert job["state"] == "succeeded", job["progress"]
        assert {op for op, _ in cloud.state.faulted} == {"create", "list", "delete"}, cloud.state.faulted
        assert sampler.peak.get("burst", 0) <= 3, sampler.peak
        assert Decimal(budget["committed"]) <= BUDGET_EUR and Decimal(budget["spent"]) <= BUDGET_EUR, budget
        assert failed and all("waits" in e["message"] for e in failed), failed
        created_once(cloud)


def test_manager_sigkilled_mid_scale_up_restarts_without_loss_or_double_launch(tmp_path: Path) -> None:
    import httpx

    cluster, base = write_cluster_file(tmp_path)

    def start() -> subprocess.Popen:
        return start_rmctl_up(cluster, tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def api(path: str) -> object:
        token = (tmp_path / "state" / "token").read_text().strip()
        return httpx.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=5).json()

    first = start()
    second = None
    try:
        wait_for("rmctl up", lambda: healthy(base))
        wait_for("the on-prem node", lambda: [n for n in api("/api/v1/nodes") if n["state"] == "idle"])
        token = (tmp_path / "state" / "token").read_text().strip()
        job = {"name": "restart", "tasks": [{"name": "a", "run": "builtin.sleep", "args": {"seconds": 3}, "replicate": 16},
                                            {"name": "b", "run": "builtin.echo", "args": {"ok": True}, "after": ["a"]}]}
        job_id = httpx.post(f"{base}/api/v1/jobs", json=job, headers={"Authorization": f"Bearer {token}"}).json()["id"]
        wait_for("the burst launch", lambda: [e for e in api("/api/v1/events?kind=launch") if e["pool"] == "burst"])
        first.send_signal(signal.SIGKILL)  # mid scale-up: burst nodes are provisioning or booting
        first.wait(timeout=30)

        second = start()
        wait_for("the restarted rmctl up", lambda: healthy(base))
        done = wait_for("the job to finish after the restart",
                        lambda: (j := api(f"/api/v1/jobs/{job_id}"))["state"] in ("succeeded", "failed") and j, timeout_s=240)
        assert done["state"] == "succeeded", done
        assert len(done["tasks"]) == 17 and all(t["state"] == "succeeded" for t in done["tasks"])
        wait_for("the burst pool to return to 0", lambda: not [n for n in api("/api/v1/nodes") if n["pool"] == "burst"],
                 timeout_s=120)
        burst = [n for n in api("/api/v1/nodes?all=true") if n["pool"] == "burst"]
        assert len(burst) <= 4, f"nodes were launched twice: {[(n['id'], n['state']) for n in burst]}"
        assert not api("/api/v1/events?kind=lost"), "an agent was lost across the manager restart"
    finally:
        for process in (second, first):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(timeout=120)
    import sqlite3

    rows = sqlite3.connect(tmp_path / "rm-demo.db").execute(
        "select count(*), max(completions), min(completions) from tasks where job_id = ?", (job_id,)).fetchone()
    assert rows == (17, 1, 1), f"results not recorded exactly once: {rows}"
    assert processes_under(tmp_path) == []


def test_node_that_never_registers_is_destroyed_and_its_pool_backs_off(tmp_path: Path) -> None:
    from rm.config import parse_config

    config = parse_config({
        "cluster": "stuck", "database": f"sqlite:///{tmp_path}/rm.db", "broker": "embedded",
        "state_dir": str(tmp_path / "state"), "api": {"host": "127.0.0.1", "port": 0}, "policy": {"tick_s": 0.5},
        # the agent "boots" for 10 minutes: it never registers within boot_timeout_s
        "pools": [{"name": "onprem", "provider": "local", "slots": 1, "min_nodes": 1, "max_nodes": 1,
                   "boot_delay_s": 600, "boot_timeout_s": 2}],
    }, "test")
    running = Running(config)
    try:
        booting = wait_for("a booting node", lambda: [n for n in running.nodes() if n["state"] == "booting"])[0]
        agent = psutil.Process(running.agent_pid(booting["id"]))
        first = wait_for("the first boot timeout", lambda: running.events(kind="boot-timeout"), timeout_s=60)[0]
        assert first["node"] == booting["id"]
        assert "did not register within boot_timeout_s" in first["message"] and "waits 5 s" in first["message"]
        wait_for("the stuck agent to be destroyed", lambda: not still_running([agent]), timeout_s=60)
        backoff = wait_for("a backoff refusal", lambda: [e for e in running.events(kind="refused")
                                                          if e["cause"] == "backoff"], timeout_s=30)[0]
        assert "recent launches failed" in backoff["message"]
        second = wait_for("a second boot timeout", lambda: running.events(kind="boot-timeout")[1:], timeout_s=90)[0]
        assert "waits 10 s" in second["message"], "the backoff did not double"
        relaunch = next(e for e in running.events(kind="launch") if e["at"] > first["at"])
        assert epoch(relaunch["at"]) - epoch(first["at"]) >= 5.0, "relaunched before the backoff elapsed"
        statuses = {n.id: n.status for n in running.node_rows()}
        assert statuses[booting["id"]] == "failed"
    finally:
        running.stop()
