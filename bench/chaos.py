"""What the chaos suite survives, in figures: nothing lost, nothing recorded twice, and how long
each kind of failure costs.

Each run, on the issue's cluster (on-prem 1x2 slots, burst up to 4x2 slots, tick 1 s, real
agents, real Redis), the scenarios of ``tests/test_chaos.py``:

1. a 300-task job (1 s sleeps) during which 3 agents running its tasks are SIGKILLed (their whole
   process group, as a VM that dies; seeded draw, one seed per run);
2. a 40-task job (2 s sleeps) during which the broker (a redis-server of its own, AOF on) is
   stopped for 8 s and started again on the same port;
3. the same 40-task job with no outage, as the baseline.

and prints JSON: tasks run, lost (must be 0) and recorded twice (must be 0); kills and the tasks
they interrupted; re-run delay (kill -> the killed node's first task started elsewhere) p50/p95;
the outage job's time vs. the baseline's; broker back -> first task started; nodes wrongly taken
for lost during the outage; and ``failover_s``, the HA standby's take-over time from
``bench/failover.py`` (kill the leader -> standby elected, and -> its first action), measured over
the same number of runs.

Usage: python bench/chaos.py [--runs N] [--no-failover]   (failover needs PostgreSQL on 127.0.0.1:5432)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.failover import measure_failover, percentiles  # noqa: E402
from rm.logs import setup_logging  # noqa: E402
from tests.chaos_support import (  # noqa: E402
    KillRun,
    OutageRun,
    agents_killed_during_a_job,
    job_across_a_broker_outage,
    job_seconds,
    own_broker,
)
from tests.e2e_support import Running, issue_cluster  # noqa: E402

KILL_TASKS, KILL_SECONDS, KILLS = 300, 1.0, 3
OUTAGE_TASKS, OUTAGE_SECONDS, OUTAGE_S = 40, 2.0, 8.0


def task_counts(running: Running, job: dict[str, Any]) -> dict[str, int]:
    """Tasks of a finished job: run, lost (not succeeded), recorded more than once, run more than once."""
    rows = running.task_rows(job["id"])
    return {"run": len(rows), "lost": sum(1 for r in rows if r.state != "succeeded"),
            "duplicates": sum(1 for r in rows if r.completions > 1),
            "interrupted": sum(1 for r in rows if r.attempts > 1)}


def kill_run(seed: int) -> tuple[KillRun, dict[str, int]]:
    with tempfile.TemporaryDirectory() as tmp, issue_cluster(Path(tmp)) as running:
        run = agents_killed_during_a_job(running, KILL_TASKS, KILL_SECONDS, KILLS, seed)
        return run, task_counts(running, run.job)


def outage_run(with_outage: bool) -> tuple[OutageRun, dict[str, int], int]:
    """The 40-task job across an outage (or none); also how many nodes were marked lost."""
    with tempfile.TemporaryDirectory() as tmp, own_broker(Path(tmp)) as broker, \
            issue_cluster(Path(tmp), broker=broker.url) as running:
        run = job_across_a_broker_outage(running, broker if with_outage else None, OUTAGE_TASKS, OUTAGE_SECONDS,
                                         OUTAGE_S)
        return run, task_counts(running, run.job), len(running.events(kind="lost"))


def median(values: list[float]) -> float | None:
    return percentiles(values)["p50"] if values else None


def measure(runs: int, failover: bool) -> dict[str, Any]:
    totals = {"run": 0, "lost": 0, "duplicates": 0}
    delays: list[float] = []
    interrupted = kills = wrongly_lost = 0
    outage_s, baseline_s, back_s = [], [], []
    for seed in range(runs):
        killed, counts = kill_run(seed)
        kills += len(killed.kills)
        interrupted += counts["interrupted"]
        delays += [d for d in killed.rerun_delays_s if d is not None]
        outage, outage_counts, lost = outage_run(with_outage=True)
        baseline, baseline_counts, _ = outage_run(with_outage=False)
        wrongly_lost += lost
        outage_s.append(job_seconds(outage.job))
        baseline_s.append(job_seconds(baseline.job))
        if outage.first_start_after_back_s is not None:
            back_s.append(outage.first_start_after_back_s)
        for each in (counts, outage_counts, baseline_counts):
            for key in totals:
                totals[key] += each[key]
    return {
        "benchmark": "chaos", "runs": runs,
        "tasks_run": totals["run"], "tasks_lost": totals["lost"], "duplicate_completions": totals["duplicates"],
        "kills": kills, "tasks_interrupted_by_kills": interrupted,
        "rerun_delay_s": percentiles(delays) if delays else None,
        "outage_s": OUTAGE_S, "outage_job_s": median(outage_s), "baseline_job_s": median(baseline_s),
        "first_task_after_broker_back_s": median(back_s),
        "nodes_wrongly_lost": wrongly_lost,
        # kill the HA leader -> the standby is elected / acts (bench/failover.py); null with --no-failover
        "failover_s": measure_failover(runs) if failover else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-failover", action="store_true", help="skip the HA failover figure (needs PostgreSQL)")
    args = parser.parse_args()
    setup_logging(level="WARNING")
    print(json.dumps(measure(args.runs, failover=not args.no_failover), indent=2))


if __name__ == "__main__":
    main()
