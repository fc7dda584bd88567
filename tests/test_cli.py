"""``rmctl`` as a user runs it: real processes, a real manager, output read back.

The demo test guards the README's first quick-start command.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.e2e_support import RMCTL, issue_config, processes_under, start_rmctl_up, wait_for, write_cluster_file

pytestmark = pytest.mark.e2e



def rmctl(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RMCTL, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**_environ(), "COLUMNS": "200"})


def _environ() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("RM_TOKEN", "RM_API")}


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
