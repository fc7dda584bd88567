"""``rmctl`` as a user runs it: real processes, a real manager, output read back.

The demo test guards the README's first quick-start command.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from tests.e2e_support import RMCTL, healthy, issue_config, start_rmctl_up, wait_for, write_cluster_file

pytestmark = pytest.mark.e2e



def rmctl(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RMCTL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**_environ(), "COLUMNS": "200"})


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("RM_TOKEN", "RM_API")}


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


def test_bad_config_is_refused_naming_the_file_and_field(tmp_path: Path) -> None:
    config = issue_config(tmp_path).model_dump(mode="json")
    config["pools"][1]["max_nodes"] = -1
    config["policy"]["load_factor"] = 0
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = rmctl("up", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(path) in result.stdout and "pools[1].max_nodes" in result.stdout and "policy.load_factor" in result.stdout
    assert processes_under(tmp_path) == []


def test_submit_wait_and_listings_against_rmctl_up(tmp_path: Path) -> None:
    cluster, base = write_cluster_file(tmp_path)
    up = start_rmctl_up(cluster, tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for("the token file", lambda: (tmp_path / "state" / "token").exists())
        small = tmp_path / "small.yaml"
        small.write_text(yaml.safe_dump({"name": "small", "labels": ["onprem"], "tasks": [
            {"name": "step", "run": "builtin.sleep", "args": {"seconds": 0.5}, "replicate": 4}]}))
        done = rmctl("submit", str(small), "--wait", "--config", str(cluster), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "submitted job" in done.stdout and "succeeded" in done.stdout

        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"name": "bad", "tasks": [
            {"name": "a", "run": "builtin.sleep"}, {"name": "b", "run": "builtin.nope", "after": ["zz"]}]}))
        refused = rmctl("submit", str(bad), "--config", str(cluster), cwd=tmp_path)
        assert refused.returncode == 1
        assert "tasks.1.after:" in refused.stdout and "tasks.1.run:" in refused.stdout, refused.stdout

        for command, expected in (("nodes", "onprem-"), ("jobs", "small"), ("pools", "burst"), ("events", "launch")):
            listing = rmctl(command, "--config", str(cluster), cwd=tmp_path)
            assert listing.returncode == 0 and expected in listing.stdout, (command, listing.stdout, listing.stderr)

        anonymous = rmctl("jobs", "--api", base, "--token", "wrong", cwd=tmp_path)
        assert anonymous.returncode != 0 and "401" in anonymous.stdout + anonymous.stderr
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=120)
    assert up.returncode == 0
    assert processes_under(tmp_path) == []


def test_quick_start_demo(tmp_path: Path) -> None:
    """The README's first command: the demo bursts, comes back, and leaves nothing running."""
    result = rmctl("demo", "--timeout", "240", cwd=tmp_path, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "launch 4 node(s) in pool burst" in output
    assert "succeeded (42/42 tasks succeeded)" in output
    assert "after the job ended" in output
    assert "tasks run more than once │ 0" in output
    assert (tmp_path / ".rm-demo" / "rm-demo.db").exists()
    assert processes_under(tmp_path) == []


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
