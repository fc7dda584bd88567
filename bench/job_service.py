"""What does a big job cost the manager? Submission, publication and the controller's tick.

Starts the manager with no agents (so nothing drains the queue), submits one job of N
replicas plus a final step, and prints JSON figures: the time to validate, store and publish
the job (the API call's latency), the broker backlog afterwards, and the controller's tick
duration, reconciliation and dispatch costs with that backlog waiting.

Usage: python bench/job_service.py [--tasks N]
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

from rm.config import parse_config  # noqa: E402
from rm.logs import setup_logging  # noqa: E402
from rm.runtime import Runtime  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    setup_logging(level="WARNING")
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config({
            "cluster": "bench", "database": f"sqlite:///{tmp}/rm.db", "broker": "embedded", "state_dir": tmp,
            "api": {"port": 0}, "policy": {"tick_s": 1},
            "pools": [{"name": "burst", "provider": "local", "min_nodes": 0, "max_nodes": 0}]})
        runtime = Runtime(config).start()
        try:
            workflow = {"name": "big", "tasks": [
                {"name": "a", "run": "builtin.sleep", "args": {"seconds": 1}, "replicate": args.tasks},
                {"name": "b", "run": "builtin.echo", "after": ["a"]}]}
            started = time.perf_counter()
            runtime.jobs.submit(workflow, "bench", time.time())
            submit_s = time.perf_counter() - started
            time.sleep(6 * config.policy.tick_s)
            ticks = [r.duration_s * 1000 for r in list(runtime.controller.reports)[-5:]]
            started = time.perf_counter()
            runtime.jobs.reconcile(time.time(), full=True)
            full_sweep_ms = (time.perf_counter() - started) * 1000
            print(json.dumps({
                "benchmark": "job_service",
                "tasks": args.tasks + 1,
                "submit_and_publish_s": round(submit_s, 2),
                "publish_per_task_ms": round(submit_s * 1000 / args.tasks, 3),
                "broker_backlog": runtime.broker.llen("rm.bench"),
                "tick_ms_median": round(statistics.median(ticks), 2),
                "reconcile_full_sweep_ms": round(full_sweep_ms, 2),
                "demand_seen": runtime.controller.status()["demand"],
            }, indent=2))
        finally:
            runtime.stop()


if __name__ == "__main__":
    main()
