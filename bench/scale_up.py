"""How fast does a burst reach the burst pool, and how fast does the pool come back?

Runs the issue's configuration (on-prem 1 node x 2 slots, burst up to 4 nodes x 2 slots with a
2 s simulated boot, tick 1 s, idle timeout 10 s) with real agents and the embedded Redis, submits
the s1-ortho workflow (fetch -> tile x40 -> zip) through the API and prints JSON figures:

- reaction_s: the backlog reached the broker (first tile queued) -> first burst launch decided
- reaction_from_submit_s: job submitted -> first burst launch decided (includes fetch, 0.5 s)
- first_burst_task_s: job submitted -> first task running on a burst node
- makespan_s: job submitted -> job finished
- back_to_zero_s: job finished -> last burst node destroyed
- tick_ms p50/p95/max: controller tick duration during the run

Usage: python bench/scale_up.py [--runs N]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import repeat  # noqa: E402
from tests.e2e_support import S1_ORTHO, epoch, issue_cluster, wait_for  # noqa: E402


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, issue_cluster(Path(tmp)) as running:
        submitted = time.time()
        job_id = running.client.post("/api/v1/jobs", S1_ORTHO)["id"]
        job = running.finished_job(job_id, timeout_s=300)
        wait_for("the burst pool to return to 0", lambda: not running.live("burst"), timeout_s=120)
        launches = [e for e in running.events(kind="launch") if e["pool"] == "burst"]
        first_launch = min(epoch(e["at"]) for e in launches)
        tiles_queued = min(epoch(t["queued_at"]) for t in job["tasks"] if t["name"] == "tile")
        burst_starts = [epoch(t["started_at"]) for t in job["tasks"] if (t["node"] or "").startswith("burst-")]
        finished = epoch(job["finished_at"])
        ended = [n.ended_at for n in running.node_rows() if n.pool == "burst"]
        ticks = sorted(r.duration_s * 1000 for r in running.runtime.controller.reports)
        return {
            "reaction_s": round(first_launch - tiles_queued, 3),
            "reaction_from_submit_s": round(first_launch - submitted, 3),
            "first_burst_task_s": round(min(burst_starts) - submitted, 3),
            "makespan_s": round(finished - submitted, 3),
            "back_to_zero_s": round(max(ended) - finished, 3),
            "burst_nodes_launched": sum(e["data"]["count"] for e in launches),
            "tasks_succeeded": sum(t["state"] == "succeeded" for t in job["tasks"]),
            "tasks_run_twice": sum(t["attempts"] > 1 for t in job["tasks"]),
            "tick_ms_p50": round(statistics.median(ticks), 2),
            "tick_ms_p95": round(ticks[int(0.95 * (len(ticks) - 1))], 2),
            "tick_ms_max": round(ticks[-1], 2),
        }


if __name__ == "__main__":
    repeat.main("scale_up", __doc__, one_run, default_runs=1)
