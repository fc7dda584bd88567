"""End to end: real agents (Celery workers in their own processes), the embedded Redis, a real
database, the manager's controller and its HTTP API. Nothing of ours is mocked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e_support import (
    S1_ORTHO,
    PoolSampler,
    Running,
    descendants,
    healthy,
    issue_cluster,
    issue_config,
    start_rmctl_up,
    still_running,
    wait_for,
    write_cluster_file,
)
from tests.helpers import group_members

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/rm-demo.db"
    return request.getfixturevalue("postgres_url")


def test_burst_spills_over_and_comes_back(tmp_path: Path, database: str) -> None:
    running = Running(issue_config(tmp_path, database=database))
    sampler = PoolSampler(running)
    sampler.start()
    try:
        wait_for("the on-prem node to register", lambda: running.ready("onprem"))

        # An on-prem-only backlog (labels: [onprem]) must never launch a cloud node.
        onprem_only = {"name": "onprem-only", "labels": ["onprem"],
                       "tasks": [{"name": "t", "run": "builtin.sleep", "args": {"seconds": 1}, "replicate": 8}]}
        first = running.client.post("/api/v1/jobs", onprem_only)["id"]
        assert running.finished_job(first)["state"] == "succeeded"
        assert not [e for e in running.events(kind="launch") if e["pool"] == "burst"], "on-prem backlog launched burst nodes"
        assert {t.node_id for t in running.task_rows(first)} == {running.ready("onprem")[0]["id"]}

        # The open burst spills over to the burst pool.
        job_id = running.client.post("/api/v1/jobs", S1_ORTHO)["id"]
        job = running.finished_job(job_id)
        assert job["state"] == "succeeded", job
        tasks = job["tasks"]
        assert len(tasks) == 42 and all(t["state"] == "succeeded" for t in tasks)
        assert sorted((t["name"], t["index"]) for t in tasks if t["name"] == "tile") == [("tile", i) for i in range(40)]
        assert all(row.completions == 1 for row in running.task_rows(job_id)), "a result was recorded twice"
        burst_launches = [e for e in running.events(kind="launch") if e["pool"] == "burst"]
        assert burst_launches and all(e["cause"] == "demand" and "burst" in e["message"] for e in burst_launches)
        assert any(t["node"].startswith("burst-") for t in tasks), "no task ran on a burst node"
        zip_task = next(t for t in tasks if t["name"] == "zip")
        assert zip_task["result"] == {"ok": True}
        last_tile = max(t["finished_at"] for t in tasks if t["name"] == "tile")
        assert zip_task["started_at"] >= last_tile, "zip started before every tile finished"

        # ...and comes back: every burst node drained for idleness, destroyed, and the pool at 0.
        wait_for("the burst pool to return to 0 nodes", lambda: not running.live("burst"), timeout_s=120)
        drains = [e for e in running.events(kind="drain") if e["pool"] == "burst"]
        assert drains and all(e["cause"] == "idle" and "idle" in e["message"] for e in drains)
        burst_rows = [n for n in running.node_rows() if n.pool == "burst"]
        assert burst_rows and all(n.status == "terminated" for n in burst_rows)
        assert len(running.ready("onprem")) == 1, "the on-prem minimum was released"
    finally:
        try:
            sampler.stop()
        finally:
            running.stop()
    assert sampler.peak.get("burst", 0) <= 4 and sampler.peak.get("onprem", 0) <= 1, sampler.peak
    assert sampler.peak.get("burst", 0) >= 1


def test_sigkilled_agent_task_reruns_elsewhere(tmp_path: Path) -> None:
    with issue_cluster(tmp_path, idle_timeout_s=60) as running:
        work = {"name": "long", "tasks": [{"name": "step", "run": "builtin.sleep", "args": {"seconds": 6}, "replicate": 6}]}
        job_id = running.client.post("/api/v1/jobs", work)["id"]
        victim = wait_for("a task running on a burst node", lambda: next(
            (t["node"] for t in running.job(job_id)["tasks"] if t["state"] == "running" and (t["node"] or "").startswith("burst-")), None))
        victim_tasks = {t["id"] for t in running.job(job_id)["tasks"] if t["node"] == victim and t["state"] == "running"}
        victim_pid = running.agent_pid(victim)
        killed_at = time.time()
        os.kill(victim_pid, signal.SIGKILL)  # the agent's main process only: its pool children are orphaned

        job = running.finished_job(job_id)
        assert job["state"] == "succeeded", job
        rows = {t.id: t for t in running.task_rows(job_id)}
        assert all(t.completions == 1 for t in rows.values()), "a result was recorded twice"
        for task_id in victim_tasks:
            assert rows[task_id].node_id != victim, f"{task_id} did not move off the killed node"
            assert rows[task_id].attempts >= 2 and rows[task_id].finished_at > killed_at
        lost = [e for e in running.events(kind="lost") if e["node"] == victim]
        assert lost and lost[0]["cause"] in ("vanished", "heartbeat")
        assert [e for e in running.events(kind="task-rerun") if e["task"] in victim_tasks]
        assert not group_members(victim_pid), "the lost node's orphaned pool processes were not fenced"


def test_rmctl_up_stops_cleanly_leaving_no_process(tmp_path: Path) -> None:
    cluster, base = write_cluster_file(tmp_path)
    up = start_rmctl_up(cluster, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for("rmctl up to answer /healthz", lambda: healthy(base))
        token = (tmp_path / "state" / "token").read_text().strip()
        headers = {"Authorization": f"Bearer {token}"}
        job = {"name": "busy", "tasks": [{"name": "s", "run": "builtin.sleep", "args": {"seconds": 30}, "replicate": 6}]}
        assert httpx.post(f"{base}/api/v1/jobs", json=job, headers=headers).status_code == 201
        wait_for("burst nodes to start", lambda: [n for n in httpx.get(f"{base}/api/v1/nodes", headers=headers).json()
                                                  if n["pool"] == "burst" and n["state"] in ("idle", "busy")])
        started = descendants(up.pid)
        assert len(started) >= 3, "expected the broker and several agents under rmctl up"
        up.send_signal(signal.SIGTERM)
        output = up.communicate(timeout=120)[0].decode()
        assert up.returncode == 0, output
    finally:
        if up.poll() is None:
            up.kill()
    assert still_running(started) == [], "rmctl up left processes behind"
