"""A real peer side by side: Dask's adaptive LocalCluster and hybrid-rm's local provider, same burst.

Both start from zero workers, may grow to ``--max`` workers of ``--slots`` threads/slots each, and
run the same ``--tasks`` sleeps of ``--seconds`` on this machine, one after the other in one run:

- Dask distributed: ``LocalCluster(n_workers=0, threads_per_worker=slots).adapt(minimum=0,
  maximum=max)``, the tasks submitted with ``client.map(time.sleep, ...)``.
- hybrid-rm: the real manager (``rm.runtime.Runtime``: controller, API, embedded Redis) with one
  ``local`` pool (``min_nodes 0``, ``max_nodes max``, ``slots`` per agent), the tasks submitted
  as one workflow of ``builtin.sleep`` replicated ``--tasks`` times through the HTTP API; every
  node is a real Celery agent process.

Reported per system: ``makespan_s`` (submit -> last result) and ``worker_seconds`` (the sum of
worker lifetimes from submit until the system is back to zero workers; times ``slots`` for
``slot_seconds``), ``peak_workers``, and ``back_to_zero_s`` (last result -> no worker left).
Prints JSON.

Usage: python bench/dask_vs_hybrid.py [--tasks 40] [--seconds 2] [--max 4] [--slots 2]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import select  # noqa: E402

from rm.client import ApiClient  # noqa: E402
from rm.config import parse_config  # noqa: E402
from rm.models import LedgerEntry  # noqa: E402
from rm.runtime import Runtime  # noqa: E402

SETTLE_TIMEOUT_S = 120.0


class WorkerSampler(threading.Thread):
    """Integrates a worker count over time (sampled every 0.1 s) and keeps its peak."""

    def __init__(self, count: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.count, self.worker_seconds, self.peak = count, 0.0, 0
        self._halt = threading.Event()

    def run(self) -> None:
        last = time.monotonic()
        while not self._halt.wait(0.1):
            now, workers = time.monotonic(), self.count()
            self.worker_seconds += workers * (now - last)
            self.peak = max(self.peak, workers)
            last = now

    def stop(self) -> None:
        self._halt.set()
        self.join()


def wait_until(predicate: Callable[[], Any], timeout_s: float, every_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every_s)
    return False


def run_dask(tasks: int, seconds: float, maximum: int, slots: int) -> dict[str, float]:
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=0, threads_per_worker=slots, processes=True, dashboard_address=None,
                      silence_logs=logging.CRITICAL) as cluster, \
            Client(cluster) as client:
        cluster.adapt(minimum=0, maximum=maximum)
        sampler = WorkerSampler(lambda: len(cluster.scheduler_info["workers"]))
        sampler.start()
        submitted = time.monotonic()
        futures = client.map(time.sleep, [seconds] * tasks, pure=False)
        client.gather(futures)
        finished = time.monotonic()
        del futures
        settled = wait_until(lambda: not cluster.scheduler_info["workers"], SETTLE_TIMEOUT_S)
        back = time.monotonic()
        sampler.stop()
    return summary(finished - submitted, sampler, slots, back - finished, settled)


def hybrid_config(tmp: Path, maximum: int, slots: int):
    return parse_config({
        "cluster": "bench", "database": f"sqlite:///{tmp}/rm.db", "broker": "embedded", "state_dir": str(tmp / "state"),
        "api": {"host": "127.0.0.1", "port": 0},
        "policy": {"tick_s": 1, "load_factor": 1.0, "idle_timeout_s": 3, "scale_down_ticks": 2},
        "pools": [{"name": "local", "provider": "local", "slots": slots, "min_nodes": 0, "max_nodes": maximum}],
    }, "bench")


def run_hybrid(tasks: int, seconds: float, maximum: int, slots: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime(hybrid_config(Path(tmp), maximum, slots)).start()
        try:
            client = ApiClient(runtime.serve_api(), runtime.token_path.read_text().strip())
            live = lambda: sum(1 for n in client.get("/api/v1/nodes") if n["state"] in ("idle", "busy", "draining"))  # noqa: E731
            sampler = WorkerSampler(live)
            sampler.start()
            workflow = {"name": "burst", "tasks": [{"name": "sleep", "run": "builtin.sleep",
                                                   "args": {"seconds": seconds}, "replicate": tasks}]}
            submitted = time.monotonic()
            job_id = client.post("/api/v1/jobs", workflow)["id"]
            if not wait_until(lambda: client.get(f"/api/v1/jobs/{job_id}")["state"] in ("succeeded", "failed"),
                              SETTLE_TIMEOUT_S * 2, every_s=0.1):
                raise RuntimeError("the hybrid-rm job did not finish")
            finished = time.monotonic()
            settled = wait_until(lambda: not live(), SETTLE_TIMEOUT_S)
            back = time.monotonic()
            sampler.stop()
            with runtime.store.session() as session:
                entries = list(session.scalars(select(LedgerEntry)))
            billed_node_s = sum((e.ended_at or time.time()) - e.started_at for e in entries)
            client.close()
        finally:
            runtime.stop()
    out = summary(finished - submitted, sampler, slots, back - finished, settled)
    out["ledger_node_seconds"] = round(billed_node_s, 1)  # launch request -> destruction, boots included
    return out


def summary(makespan: float, sampler: WorkerSampler, slots: int, back: float, settled: bool) -> dict[str, float]:
    return {"makespan_s": round(makespan, 2), "worker_seconds": round(sampler.worker_seconds, 1),
            "slot_seconds": round(sampler.worker_seconds * slots, 1), "peak_workers": sampler.peak,
            "back_to_zero_s": round(back, 1) if settled else None}


def compare(tasks: int, seconds: float, maximum: int, slots: int) -> dict[str, Any]:
    ideal = tasks * seconds
    out: dict[str, Any] = {"benchmark": "dask_vs_hybrid", "tasks": tasks, "seconds_each": seconds, "max_workers": maximum,
                           "slots_per_worker": slots, "task_seconds": ideal,
                           "at": datetime.now().isoformat(timespec="seconds")}
    out["dask"] = run_dask(tasks, seconds, maximum, slots)
    out["hybrid_rm"] = run_hybrid(tasks, seconds, maximum, slots)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--max", type=int, default=4)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    print(json.dumps(compare(args.tasks, args.seconds, args.max, args.slots), indent=2))
