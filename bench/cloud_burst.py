"""A burst through each cloud SDK to its loopback fake: how long from submit to work on a cloud VM, and back.

For each provider (azure, openstack, libcloud/EC2) runs one on-prem local node plus a cloud pool of up to
3 VMs x 2 slots on the fake cloud, whose VMs boot real agents from their cloud-init (they enrol over the
API with their one-time token). Submits 12 two-second tasks and prints JSON figures per provider:

- launch_decided_s: job submitted -> first cloud launch decided
- created_seen_s: launch decided -> the tick that saw the provider call return (create accepted and,
  for Azure, the long-running operation polled to Succeeded; the fake builds a VM in 0.3 s); at tick
  resolution (tick_s 1)
- enrolled_s: launch decided -> the first VM's agent enrolled (its agent may enrol before the tick that
  sees the provider call return)
- first_cloud_task_s: job submitted -> first task running on a cloud VM
- makespan_s, back_to_zero_s (job finished -> every VM deleted in the fake)
- api_calls_per_vm: HTTP requests the SDK made to the fake during the whole run / VMs launched
  (launch + polling + listings every tick + terminate)
- vms_created_twice: must be 0

Usage: python bench/cloud_burst.py [--runs N]
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import repeat  # noqa: E402
from tests.e2e_support import Running, epoch, wait_for  # noqa: E402
from tests.test_e2e_cloud import cloud_pool, cluster_config, fake_cloud, sleepers  # noqa: E402

PROVIDERS = ("azure", "openstack", "libcloud")


def one_provider(provider: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp, fake_cloud(provider, Path(tmp)) as (cloud, _runner):
        running = Running(cluster_config(Path(tmp), [cloud_pool(cloud)]))
        try:
            wait_for("the on-prem node", lambda: running.ready("onprem"), timeout_s=60)
            submitted = time.time()
            job = running.finished_job(running.client.post("/api/v1/jobs", sleepers(12))["id"], timeout_s=300)
            finished = epoch(job["finished_at"])
            wait_for("every cloud VM deleted", lambda: not cloud.state.names(), timeout_s=180)
            gone = time.time()
            launches = [e for e in running.events(kind="launch") if e["pool"] == "burst"]
            decided = min(epoch(e["at"]) for e in launches)
            first_node = launches[0]["data"]["node_ids"][0]
            history = running.client.get(f"/api/v1/nodes/{first_node}")["history"]
            booting = next(epoch(h["at"]) for h in history if h["to"] == "booting")
            enrolled = min(epoch(e["at"]) for e in running.events(kind="enrolled"))
            cloud_starts = [epoch(t["started_at"]) for t in job["tasks"] if t["node"].startswith("burst-")]
            vms = len(cloud.state.create_calls)
            return {
                "launch_decided_s": round(decided - submitted, 3),
                "created_seen_s": round(booting - decided, 3),
                "enrolled_s": round(enrolled - decided, 3),
                "first_cloud_task_s": round(min(cloud_starts) - submitted, 3),
                "makespan_s": round(finished - submitted, 3),
                "back_to_zero_s": round(gone - finished, 3),
                "vms": vms,
                "api_calls_per_vm": round(len(cloud.state.requests) / max(vms, 1), 1),
                "vms_created_twice": sum(1 for n in Counter(cloud.state.create_calls).values() if n > 1),
                "job_succeeded": job["state"] == "succeeded",
            }
        finally:
            running.stop()


def one_run() -> dict[str, float]:
    figures: dict[str, float] = {}
    for provider in PROVIDERS:
        for key, value in one_provider(provider).items():
            figures[f"{provider}.{key}"] = value
    return figures


if __name__ == "__main__":
    repeat.main("cloud_burst", __doc__, one_run, default_runs=1)
