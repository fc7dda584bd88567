"""Failover: how long after the leader dies does the standby lead, and act?

Two ``rmctl up`` instances (``ha.enabled``, tick 1 s, lease 3 s, the default three ticks) share
one PostgreSQL database and one redis-server. Each run SIGKILLs the current leader, at once
submits a one-task job through the surviving standby (which stores it; only a leader publishes),
and measures:

- elected_s: kill -> the standby's ``leader_elected`` event (the lease must first expire: at most
  lease_s after the dead leader's last renewal, plus up to one tick of the standby's polling);
- first_action_s: kill -> the new leader published that job's task (its first tick as leader).

The killed instance is then restarted as the new standby for the next run. Prints JSON with the
p50/p95 of both and every run. ``measure_failover(runs)`` is what ``bench/chaos.py`` reports as
its failover figure.

Usage: python bench/failover.py [--runs N]   (needs PostgreSQL on 127.0.0.1:5432)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rm.logs import setup_logging  # noqa: E402
from tests.e2e_support import epoch, wait_for  # noqa: E402
from tests.ha_support import HaPair, Instance, temporary_postgres_database  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) == 1:
        return {"p50": values[0], "p95": values[0]}
    return {"p50": round(statistics.median(values), 3),
            "p95": round(statistics.quantiles(values, n=20, method="inclusive")[18], 3)}


def _leading(pair: HaPair) -> tuple[Instance, Instance]:
    """(leader, standby), once exactly one of the two live instances leads and the other follows it."""
    def roles() -> tuple[Instance, Instance] | None:
        views = {i.name: i.leader() for i in pair.live()}
        leaders = [n for n, v in views.items() if v["leading"]]
        if len(views) != 2 or len(leaders) != 1 or any(v["holder"] != leaders[0] for v in views.values()):
            return None
        standby = next(n for n in views if n != leaders[0])
        return pair.instances[leaders[0]], pair.instances[standby]
    return wait_for("one leader and one standby", roles, timeout_s=60, every_s=0.2)


def one_failover(pair: HaPair, run: int) -> dict[str, Any]:
    leader, standby = _leading(pair)
    epoch_before = standby.leader()["epoch"]
    killed_at = pair.kill(leader.name)
    job_id = standby.submit(f"failover-{run}", count=1, seconds=0)
    elected = wait_for("the standby elected", lambda: [
        e for e in standby.events("leader") if e["cause"] == "leader_elected"
        and e["data"]["holder"] == standby.name and e["data"]["epoch"] > epoch_before], timeout_s=60, every_s=0.1)[0]
    queued = wait_for("the new leader to publish the job", lambda: (
        t := standby.get(f"/api/v1/jobs/{job_id}")["tasks"][0])["queued_at"] and t, timeout_s=60, every_s=0.1)
    pair.start(leader.name)  # back as the standby of the next run
    return {"killed": leader.name, "elected_s": round(epoch(elected["at"]) - killed_at, 3),
            "first_action_s": round(epoch(queued["queued_at"]) - killed_at, 3)}


def measure_failover(runs: int = 5) -> dict[str, Any]:
    """Kill the leader ``runs`` times; p50/p95 of kill -> standby elected and kill -> its first action."""
    with tempfile.TemporaryDirectory() as tmp, temporary_postgres_database() as database, \
            HaPair(Path(tmp), database) as pair:
        pair.start("a")
        wait_for("a to lead", lambda: pair.instances["a"].leader()["leading"], timeout_s=30)
        pair.start("b")
        each = [one_failover(pair, run) for run in range(runs)]
    return {"runs": runs, "tick_s": 1.0, "lease_s": 3.0,
            "elected_s": percentiles([r["elected_s"] for r in each]),
            "first_action_s": percentiles([r["first_action_s"] for r in each]), "each": each}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    setup_logging(level="WARNING")
    print(json.dumps({"benchmark": "failover", **measure_failover(args.runs)}, indent=2))


if __name__ == "__main__":
    main()
