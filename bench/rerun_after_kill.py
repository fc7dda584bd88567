"""How long does the task of a node killed with SIGKILL take to run again elsewhere?

Runs the issue's configuration with real agents, starts six 6-second tasks, kills the main
process of one burst agent while it runs a task (SIGKILL: no warm shutdown, no ack, no requeue),
and prints JSON figures, each the median over the runs:

- detected_s: kill -> the manager marks the node lost (and destroys what is left of it)
- rerun_s: kill -> the killed node's task starts again on another node
  (bounded by agent.visibility_timeout_s + agent.restore_interval_s: the message's lease expires)
- job_succeeded: every task ended succeeded, each result recorded once

Usage: python bench/rerun_after_kill.py [--runs N]
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import repeat  # noqa: E402
from tests.e2e_support import epoch, issue_cluster, wait_for  # noqa: E402

WORK = {"name": "long", "tasks": [{"name": "step", "run": "builtin.sleep", "args": {"seconds": 6}, "replicate": 6}]}


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, issue_cluster(Path(tmp), idle_timeout_s=60) as running:
        job_id = running.client.post("/api/v1/jobs", WORK)["id"]
        victim = wait_for("a task running on a burst node", lambda: next(
            (t["node"] for t in running.job(job_id)["tasks"]
             if t["state"] == "running" and (t["node"] or "").startswith("burst-")), None), timeout_s=60)
        held = {t["id"] for t in running.job(job_id)["tasks"] if t["node"] == victim and t["state"] == "running"}
        killed_at = time.time()
        os.kill(running.agent_pid(victim), signal.SIGKILL)
        job = running.finished_job(job_id, timeout_s=180)
        lost = [e for e in running.events(kind="lost") if e["node"] == victim]
        reruns = [e for e in running.events(kind="task-rerun") if e["task"] in held]
        rows = running.task_rows(job_id)
        return {
            "detected_s": round(epoch(lost[0]["at"]) - killed_at, 3) if lost else None,
            "rerun_s": round(min(epoch(e["at"]) for e in reruns) - killed_at, 3) if reruns else None,
            "tasks_on_killed_node": len(held),
            "job_succeeded": job["state"] == "succeeded" and all(r.completions == 1 for r in rows),
        }


if __name__ == "__main__":
    repeat.main("rerun_after_kill", __doc__, one_run, default_runs=3)
