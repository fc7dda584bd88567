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

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rm.logs import setup_logging  # noqa: E402
from tests.e2e_support import S1_ORTHO, Running, issue_config, wait_for  # noqa: E402


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def one_run() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        running = Running(issue_config(Path(tmp)))
        try:
            wait_for("the on-prem node", lambda: running.ready("onprem"), timeout_s=60)
            submitted = time.time()
            job_id = running.client.post("/api/v1/jobs", S1_ORTHO)["id"]
            job = running.finished_job(job_id, timeout_s=300)
            wait_for("the burst pool to return to 0", lambda: not running.live("burst"), timeout_s=120)
            launches = [e for e in running.events(kind="launch") if e["pool"] == "burst"]
            first_launch = min(_ts(e["at"]) for e in launches)
            tiles_queued = min(_ts(t["queued_at"]) for t in job["tasks"] if t["name"] == "tile")
            burst_starts = [_ts(t["started_at"]) for t in job["tasks"] if (t["node"] or "").startswith("burst-")]
            ended = [n.ended_at for n in running.node_rows() if n.pool == "burst"]
            ticks = sorted(r.duration_s * 1000 for r in running.runtime.controller.reports)
            return {
                "reaction_s": round(first_launch - tiles_queued, 3),
                "reaction_from_submit_s": round(first_launch - submitted, 3),
                "first_burst_task_s": round(min(burst_starts) - submitted, 3),
                "makespan_s": round(_ts(job["finished_at"]) - submitted, 3),
                "back_to_zero_s": round(max(ended) - _ts(job["finished_at"]), 3),
                "burst_nodes_launched": sum(e["data"]["count"] for e in launches),
                "tasks_succeeded": sum(t["state"] == "succeeded" for t in job["tasks"]),
                "tasks_run_twice": sum(t["attempts"] > 1 for t in job["tasks"]),
                "tick_ms_p50": round(statistics.median(ticks), 2),
                "tick_ms_p95": round(ticks[int(0.95 * (len(ticks) - 1))], 2),
                "tick_ms_max": round(ticks[-1], 2),
            }
        finally:
            running.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    setup_logging(level="WARNING")
    runs = [one_run() for _ in range(args.runs)]
    summary = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(json.dumps({"benchmark": "scale_up", "runs": args.runs, "median": summary, "each": runs}, indent=2))


if __name__ == "__main__":
    main()
