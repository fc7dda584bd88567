"""End to end: a tight monthly budget stops bursting exactly at the cap and says why; raising it
resumes bursting on the next tick. Real agents, the embedded Redis, SQLite, the controller and the
HTTP API; the budget is raised the way an admin's config edit reaches the controller (the runtime's
config callable returns the new config from the next tick on).
"""

from __future__ import annotations

import time
from decimal import Decimal
from pathlib import Path

import pytest

from rm.config import parse_config
from tests.e2e_support import Running, issue_config, wait_for

pytestmark = pytest.mark.e2e


def money_config(tmp: Path, amount: str):  # noqa: ANN201 - a ClusterConfig
    """The issue's cluster, its burst pool billed per hour (0.40 EUR), under a monthly budget."""
    data = issue_config(tmp).model_dump()
    data["pools"][1]["billing"] = {"granularity": "hour", "minimum_s": 0}
    data["budgets"] = {"global": {"period": "month", "amount": amount}}
    return parse_config(data, "test")


BURST_JOB = {"name": "money-burst", "tasks": [{"name": "t", "run": "builtin.sleep", "args": {"seconds": 4},
                                               "replicate": 24}]}


def burst_launched(running: Running) -> int:
    return sum(e["data"]["count"] for e in running.events(kind="launch") if e["pool"] == "burst")


def test_tight_budget_stops_at_the_cap_and_raising_it_resumes(tmp_path: Path) -> None:
    running = Running(money_config(tmp_path, "0.80"))  # two burst node-hours
    try:
        wait_for("the on-prem node to register", lambda: running.ready("onprem"), timeout_s=60)
        job = running.client.post("/api/v1/jobs", BURST_JOB)["id"]

        refused = wait_for("a budget refusal", lambda: [e for e in running.events(kind="refused")
                                                        if e["cause"] == "budget"], timeout_s=60)
        assert refused[0]["pool"] == "burst"
        assert refused[0]["message"].endswith("committed 0.80 EUR + 0.40 EUR minimum unit would pass "
                                              "the monthly budget 0.80 EUR (global budget)"), refused[0]["message"]
        assert burst_launched(running) == 2  # 4 wanted, exactly 2 fit the cap
        status = wait_for("the alerts (raised on the tick after the launches)",
                          lambda: (b := running.client.get("/api/v1/budget")["budgets"][0])["alerts"] and b)
        assert (status["committed"], status["remaining"]) == ("0.80", "0.00")
        assert [a["threshold"] for a in status["alerts"]] == ["0.5", "0.8", "1.0"]
        assert len([e for e in running.events(kind="budget-alert")]) == 3
        time.sleep(2 * running.runtime.config().policy.tick_s)
        assert burst_launched(running) == 2, "launched past the cap"

        raised_at = time.time()
        running.runtime.replace_config(money_config(tmp_path, "2.00"))
        wait_for("bursting to resume", lambda: burst_launched(running) == 4, timeout_s=30)
        first_tick_after = next(r for r in running.runtime.controller.reports if r.at >= raised_at)
        assert [(launch.pool, launch.count) for launch in first_tick_after.decision.launches] == [("burst", 2)]

        assert running.finished_job(job)["state"] == "succeeded"
        report = running.client.get("/api/v1/costs", group_by="pool")
        assert sum(Decimal(r["cost"]) for r in report["rows"]) == Decimal(report["total"])
        burst_row = next(r for r in report["rows"] if r["pool"] == "burst")
        assert Decimal(burst_row["cost"]) > 0
    finally:
        running.stop()
