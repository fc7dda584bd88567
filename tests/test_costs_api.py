"""Cost reports and budget status over real HTTP, against a hand-computed run (to the cent).

One runtime for the module (embedded Redis, SQLite, the controller, uvicorn; no agents: every
pool has ``max_nodes: 0``). The known run is written into its store the way the node keeper and
the job service write it; the reports are read back over HTTP and through ``rmctl costs``.

The run, from T0 = 2026-03-10 10:00 UTC (prices in EUR):

==== ===== ===================== ============================ ============================
node pool  price / billing       lifetime                     billed
==== ===== ===================== ============================ ============================
b1   burst 0.40/h, per s, 60 s   T0 .. T0+1800                1800 s = 0.20
b2   burst same                  T0+100 .. T0+130 (30 s)      60 s minimum = 0.006666667
b3   burst same                  launch refused by provider   0
g1   big   1.50/h, per hour      T0 .. T0+4000                2 h = 3.00
o1   onprem free                 T0 .. T0+3600                0
==== ===== ===================== ============================ ============================

Total 3.206666667 -> 3.21. By pool the exact rows are big 3.00, burst 0.206666667, onprem 0;
rounded down they make 3.20, and the missing cent goes to the largest remainder (burst): 0.21.

Tasks: job J1 (alice) runs t1 on b1 T0+60..T0+960 (900 s / 2 slots x 0.40 = 0.05) and t2 on b1
T0+60..T0+1860 (clipped to the node's end: 1740 s -> 0.096666667); job J2 (bob) runs t3 on g1
T0..T0+3600 (1 slot: 1.50). Idle: burst 0.206666667 - 0.146666667 = 0.06, big 3.00 - 1.50 = 1.50,
onprem 0. J1 0.146666667 rounds down to 0.14 and gets the missing cent: 0.15.

Window T0 .. T0+900 by pool: b1 0.10, b2 0.006666667 (its rounding falls at its end, T0+130),
g1 1.50 x 900/3600 = 0.375: total 0.481666667 -> 0.48; floors big 0.37 + burst 0.10 = 0.47,
and the cent goes to burst (remainder 0.006666667 > 0.005): burst 0.11, big 0.37.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from rm.auth import Role, create_token
from rm.config import parse_config
from rm.ledger import open_entry
from rm.lifecycle import change_status, create_node
from rm.models import Job, Node, Task
from rm.runtime import Runtime
from rm.states import NodeStatus
from tests.e2e_support import RMCTL

pytestmark = pytest.mark.timeout(120)

S = NodeStatus
T0 = datetime(2026, 3, 10, 10, 0, tzinfo=UTC).timestamp()
FROM, TO = "2026-03-10T10:00:00Z", "2026-03-10T12:00:00Z"
RUN_TO_TERMINATED = (S.PROVISIONING, S.BOOTING, S.IDLE, S.DRAINING, S.TERMINATING, S.TERMINATED)
NODES = [("b1", "burst", 0, 1800, RUN_TO_TERMINATED), ("b2", "burst", 100, 130, RUN_TO_TERMINATED),
         ("b3", "burst", 200, 205, (S.PROVISIONING, S.FAILED)), ("g1", "big", 0, 4000, RUN_TO_TERMINATED),
         ("o1", "onprem", 0, 3600, RUN_TO_TERMINATED)]
TASKS = [("J1", "t1", "b1", 60, 960), ("J1", "t2", "b1", 60, 1860), ("J2", "t3", "g1", 0, 3600)]


def write_known_run(rt: Runtime) -> None:
    config = rt.config()
    with rt.store.session() as session:
        for node_id, pool, start, end, path in NODES:
            node = Node(id=node_id, cluster="money", pool=pool, provider="local", slots=config.pool(pool).slots, labels=[])
            create_node(session, node, "known run", T0 + start)
            open_entry(session, node, config.pool(pool), config.currency, T0 + start)
            for status in path:
                change_status(session, node, status, "known run", T0 + end)
        for job_id, owner in (("J1", "alice"), ("J2", "bob")):
            session.add(Job(id=job_id, name=f"job-{job_id}", owner=owner, state="succeeded", spec={}, created_at=T0))
        session.flush()
        for job_id, name, node_id, start, end in TASKS:
            session.add(Task(id=f"{job_id}.{name}.0", job_id=job_id, name=name, index=0, run="builtin.sleep", args={},
                             queue="rm.money", state="succeeded", node_id=node_id, started_at=T0 + start,
                             finished_at=T0 + end))


@pytest.fixture(scope="module")
def money_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, str, dict[str, str]]]:
    tmp = tmp_path_factory.mktemp("money")
    config = parse_config({
        "cluster": "money", "database": f"sqlite:///{tmp}/rm.db", "broker": "embedded", "state_dir": str(tmp),
        "api": {"host": "127.0.0.1", "port": 0}, "policy": {"tick_s": 0.5}, "currency": "EUR",
        "pools": [
            {"name": "onprem", "provider": "local", "priority": 0, "slots": 2, "max_nodes": 0},
            {"name": "burst", "provider": "local", "priority": 10, "slots": 2, "max_nodes": 0, "price_per_hour": "0.40",
             "billing": {"granularity": "second", "minimum_s": 60}},
            {"name": "big", "provider": "local", "priority": 20, "slots": 1, "max_nodes": 0, "price_per_hour": "1.50",
             "billing": {"granularity": "hour"}},
        ],
        "budgets": {"global": {"period": "month", "amount": "50"}, "pools": {"big": {"period": "day", "max_burn_per_hour": 3}}},
    })
    rt = Runtime(config)
    try:
        rt.start()
        url = rt.serve_api()
        write_known_run(rt)
        now = datetime.now(UTC).timestamp()
        tokens = {"admin": rt.token_path.read_text().strip(), "user": create_token(rt.store, "alice", Role.USER, now),
                  "viewer": create_token(rt.store, "vera", Role.VIEWER, now)}
        yield rt, url, tokens
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def http(money_api: tuple[Runtime, str, dict[str, str]]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=money_api[1], timeout=30) as client:
        yield client


def get(http: httpx.Client, path: str, token: str, **params: str) -> httpx.Response:
    return http.get(path, params=params, headers={"Authorization": f"Bearer {token}"})


def costs(http: httpx.Client, tokens: dict[str, str], **params: str) -> dict:
    response = get(http, "/api/v1/costs", tokens["admin"], **{"from": FROM, "to": TO, **params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert sum(Decimal(r["cost"]) for r in body["rows"]) == Decimal(body["total"])  # exactly, as decimals
    return body


def test_by_pool_matches_the_hand_computation(money_api, http) -> None:  # noqa: ANN001
    body = costs(http, money_api[2], group_by="pool")
    assert (body["currency"], body["total"], body["from"], body["to"]) == ("EUR", "3.21", FROM, TO)
    assert body["rows"] == [{"pool": "big", "cost": "3.00"}, {"pool": "burst", "cost": "0.21"},
                            {"pool": "onprem", "cost": "0.00"}]


def test_by_provider_and_day(money_api, http) -> None:  # noqa: ANN001
    assert costs(http, money_api[2], group_by="provider")["rows"] == [{"provider": "local", "cost": "3.21"}]
    assert costs(http, money_api[2], group_by="day")["rows"] == [{"day": "2026-03-10", "cost": "3.21"}]


def test_by_job_and_owner_show_idle_time_per_pool(money_api, http) -> None:  # noqa: ANN001
    by_job = costs(http, money_api[2], group_by="job")
    assert by_job["total"] == "3.21"
    assert by_job["rows"] == [
        {"job": "J1", "name": "job-J1", "owner": "alice", "pool": None, "cost": "0.15"},
        {"job": "J2", "name": "job-J2", "owner": "bob", "pool": None, "cost": "1.50"},
        {"job": None, "name": "(idle)", "owner": None, "pool": "big", "cost": "1.50"},
        {"job": None, "name": "(idle)", "owner": None, "pool": "burst", "cost": "0.06"},
        {"job": None, "name": "(idle)", "owner": None, "pool": "onprem", "cost": "0.00"},
    ]
    by_owner = costs(http, money_api[2], group_by="owner")
    assert [(r["owner"], r["pool"], r["cost"]) for r in by_owner["rows"]] == [
        ("alice", None, "0.15"), ("bob", None, "1.50"), ("(idle)", "big", "1.50"), ("(idle)", "burst", "0.06"),
        ("(idle)", "onprem", "0.00")]


def test_a_window_takes_its_share_and_rows_still_add_up(money_api, http) -> None:  # noqa: ANN001
    body = costs(http, money_api[2], group_by="pool", to="2026-03-10T10:15:00Z")
    assert body["total"] == "0.48"
    assert body["rows"] == [{"pool": "big", "cost": "0.37"}, {"pool": "burst", "cost": "0.11"},
                            {"pool": "onprem", "cost": "0.00"}]
    empty = costs(http, money_api[2], **{"from": "2026-03-11", "to": "2026-03-12"})
    assert (empty["total"], empty["rows"]) == ("0.00", [])


def test_csv(money_api, http) -> None:  # noqa: ANN001
    response = get(http, "/api/v1/costs", money_api[2]["admin"], **{"from": FROM, "to": TO, "format": "csv"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    assert response.text == "pool,cost,currency\nbig,3.00,EUR\nburst,0.21,EUR\nonprem,0.00,EUR\n"


def test_rmctl_costs_prints_a_table_and_writes_csv(money_api, tmp_path: Path) -> None:  # noqa: ANN001
    rt, url, tokens = money_api
    out = tmp_path / "costs.csv"
    done = subprocess.run([*RMCTL, "costs", "--api", url, "--token", tokens["admin"], "--from", FROM, "--to", TO,
                           "--group-by", "job", "--csv", str(out)], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **_pythonpath()})
    assert done.returncode == 0, done.stderr
    assert "3.21" in done.stdout and "job-J1" in done.stdout and "(idle)" in done.stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "job,name,owner,pool,cost,currency" and lines[1] == "J1,job-J1,alice,,0.15,EUR"


def test_rmctl_budget_prints_each_budget(money_api, tmp_path: Path) -> None:  # noqa: ANN001
    rt, url, tokens = money_api
    done = subprocess.run([*RMCTL, "budget", "--api", url, "--token", tokens["viewer"]], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", **_pythonpath()})
    assert done.returncode == 0, done.stderr
    assert "global" in done.stdout and "50.00" in done.stdout and "pool big" in done.stdout


def _pythonpath() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k in ("PYTHONPATH", "HOME", "VIRTUAL_ENV")}


def test_auth_and_roles(money_api, http) -> None:  # noqa: ANN001
    tokens = money_api[2]
    assert http.get("/api/v1/costs").status_code == 401
    assert http.get("/api/v1/budget").status_code == 401
    assert get(http, "/api/v1/costs", tokens["viewer"]).status_code == 403
    assert get(http, "/api/v1/costs", tokens["user"]).status_code == 403
    assert get(http, "/api/v1/budget", tokens["viewer"]).status_code == 200


@pytest.mark.parametrize(("params", "field"), [
    ({"group_by": "team"}, "group_by"),
    ({"format": "xml"}, "format"),
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-01"}, "to"),
    ({"from": "2026-03-11", "to": "2026-03-10"}, "from"),
    ({"from": "2026-03-10", "to": "2026-03-10"}, "from"),
])
def test_bad_queries_are_422_naming_the_field(money_api, http, params: dict, field: str) -> None:  # noqa: ANN001
    response = get(http, "/api/v1/costs", money_api[2]["admin"], **params)
    assert response.status_code == 422, response.text
    assert [item["loc"] for item in response.json()["detail"]] == [["query", field]]


def test_budget_status(money_api, http) -> None:  # noqa: ANN001
    body = get(http, "/api/v1/budget", money_api[2]["viewer"]).json()
    assert body["currency"] == "EUR"
    scopes = {b["scope"]: b for b in body["budgets"]}
    assert set(scopes) == {"global", "pool big"}
    glob = scopes["global"]
    assert glob["amount"] == "50.00" and glob["period"] == "month"
    # The known run is in March 2026; whatever month this runs in, nothing is billed now.
    assert Decimal(glob["remaining"]) == Decimal(glob["amount"]) - Decimal(glob["committed"])
    assert glob["burn_per_hour"] == "0.00" and glob["alerts"] == [] and glob["capped"] is False
    assert scopes["pool big"]["max_burn_per_hour"] == "3.00" and scopes["pool big"]["amount"] is None
    assert set(glob) >= {"spent", "committed", "remaining", "projected", "period_start", "period_end", "alerts"}
