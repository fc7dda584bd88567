"""The HTTP API against a live runtime: auth on every route, roles, job submission and
cancellation, validation errors, placement queues, cluster views, the body size limit, secrets.

One runtime serves the whole module: a real embedded Redis, a real SQLite store, the real
controller loop and uvicorn on a free port, but no agents (every pool has ``max_nodes: 0``), so
nothing is ever launched and every published task stays in its broker queue where the tests can
see it. Requests go over real HTTP with httpx.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from rm.api.app import MAX_BODY_BYTES, create_app
from rm.auth import Role, create_token, hash_token
from rm.config import parse_config
from rm.lifecycle import change_status, create_node
from rm.models import Job, Node, Task
from rm.runtime import Runtime
from rm.states import NodeStatus
from tests.workflows import S1_ORTHO

pytestmark = pytest.mark.timeout(120)

CLUSTER = "apitest"
ANY_QUEUE = f"rm.{CLUSTER}"
ONPREM_QUEUE = f"rm.{CLUSTER}.onprem"
GHOST_NODE = "apitest-burst-ghost"  # a terminal node row, inserted through rm.lifecycle


#: Every route the API is meant to have; the live inventory must contain at least these.
EXPECTED_API_ROUTES = {
    ("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/jobs/{job_id}"),
    ("POST", "/api/v1/jobs/{job_id}/cancel"), ("GET", "/api/v1/pools"), ("GET", "/api/v1/nodes"),
    ("GET", "/api/v1/nodes/{node_id}"), ("POST", "/api/v1/nodes/{node_id}/drain"), ("GET", "/api/v1/events"),
    ("GET", "/api/v1/status"),
}
ADMIN_ONLY_READS = {"/api/v1/costs"}  # what each job and owner spent: admins only
READ_ROUTES = ["/api/v1/jobs", "/api/v1/nodes", "/api/v1/pools", "/api/v1/events", "/api/v1/status"]


@dataclass(frozen=True)
class Api:
    rt: Runtime
    url: str
    admin: str
    alice: str
    bob: str
    viewer: str

    def tokens(self) -> dict[str, str]:
        return {"admin": self.admin, "alice": self.alice, "bob": self.bob, "viewer": self.viewer}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def simple(name: str = "one", **task: Any) -> dict[str, Any]:
    """A one-task workflow that validates, with ``task`` overriding the task's fields."""
    return {"name": name, "tasks": [{"name": "a", "run": "builtin.sleep", "args": {"seconds": 0.1}, **task}]}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    tmp = tmp_path_factory.mktemp("api")
    config = parse_config({
        "cluster": CLUSTER, "database": f"sqlite:///{tmp}/rm.db", "broker": "embedded", "state_dir": str(tmp),
        "api": {"host": "127.0.0.1", "port": 0}, "policy": {"tick_s": 0.5},
        "pools": [
            {"name": "onprem", "provider": "local", "priority": 0, "slots": 2, "min_nodes": 0, "max_nodes": 0,
             "labels": ["onprem"]},
            {"name": "burst", "provider": "local", "priority": 10, "slots": 2, "min_nodes": 0, "max_nodes": 0},
        ],
    })
    rt = Runtime(config)
    try:
        rt.start()
        url = rt.serve_api()
    except BaseException:
        if getattr(rt, "controller", None) is not None:
            rt.stop()
        elif rt.embedded is not None:
            rt.embedded.stop()
        raise
    try:
        now = time.time()
        admin = rt.token_path.read_text().strip()
        alice = create_token(rt.store, "alice", Role.USER, now)
        bob = create_token(rt.store, "bob", Role.USER, now)
        viewer = create_token(rt.store, "vera", Role.VIEWER, now)
        with rt.store.session() as session:  # a node that ended: visible with ?all=true, never drained
            node = Node(id=GHOST_NODE, cluster=CLUSTER, pool="burst", provider="local", slots=2, labels=[])
            create_node(session, node, "test fixture: a launch that failed", now)
            change_status(session, node, NodeStatus.FAILED, "test fixture: the provider refused the launch", now)
        yield Api(rt, url, admin, alice, bob, viewer)
    finally:
        rt.stop()


@pytest.fixture(scope="module")
def client(api: Api) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api.url, timeout=30) as http:
        yield http


def counts(api: Api) -> tuple[int, int]:
    """(jobs, tasks) rows in the store."""
    with api.rt.store.session() as session:
        return (session.scalar(select(func.count()).select_from(Job)),
                session.scalar(select(func.count()).select_from(Task)))


def submit(client: httpx.Client, token: str, body: Any) -> str:
    response = client.post("/api/v1/jobs", headers=bearer(token), json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def live_routes(api: Api, client: httpx.Client) -> set[tuple[str, str]]:
    """(method, path) of every route: from the served OpenAPI spec and from ``app.routes``
    (so a route hidden from the spec is covered too)."""
    spec = client.get("/openapi.json", headers=bearer(api.admin)).json()
    routes = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    for route in create_app(api.rt).routes:
        for method in getattr(route, "methods", None) or ():
            if method not in ("HEAD", "OPTIONS"):
                routes.add((method, route.path))
    return routes


def fill(path: str, value: str = "nope") -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def wait_for(predicate, timeout_s: float = 10.0):  # noqa: ANN001, ANN201 - a polling helper
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


# -- authentication ----------------------------------------------------------------------------

def test_healthz_answers_without_a_token(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_route_inventory_holds_every_expected_api_route(api: Api, client: httpx.Client) -> None:
    routes = live_routes(api, client)
    assert EXPECTED_API_ROUTES <= routes, f"missing: {EXPECTED_API_ROUTES - routes}"
    spec = client.get("/openapi.json", headers=bearer(api.admin)).json()
    schemes = spec.get("components", {}).get("securitySchemes", {})
    assert any(s.get("type") == "http" and s.get("scheme", "").lower() == "bearer" for s in schemes.values()), schemes


@pytest.mark.parametrize("credentials", [
    pytest.param(None, id="no-header"),
    pytest.param("Bearer not-a-real-token", id="wrong-token"),
    pytest.param("Bearer", id="bearer-without-token"),
    pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic-scheme"),
])
def test_every_api_route_needs_a_valid_token(api: Api, client: httpx.Client, credentials: str | None) -> None:
    before = counts(api)
    headers = {} if credentials is None else {"Authorization": credentials}
    failures = []
    routes = sorted(r for r in live_routes(api, client) if r[1].startswith("/api/"))
    assert len(routes) >= len(EXPECTED_API_ROUTES)
    for method, path in routes:
        # a valid body, so that only the missing credentials can stop the request
        body = simple("unauthorised") if method == "POST" else None
        response = client.request(method, fill(path), headers=headers, json=body)
        challenge = response.headers.get("www-authenticate", "")
        if response.status_code != 401 or challenge.split()[:1] != ["Bearer"]:
            failures.append(f"{method} {path}: {response.status_code} www-authenticate={challenge!r}")
        elif credentials and "not-a-real-token" in response.text:
            failures.append(f"{method} {path}: the 401 echoes the presented token")
    assert not failures, "\n".join(failures)
    assert counts(api) == before


# -- roles -------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", READ_ROUTES)
@pytest.mark.parametrize("who", ["viewer", "alice", "admin"])
def test_every_role_reads_the_cluster(api: Api, client: httpx.Client, who: str, path: str) -> None:
    response = client.get(path, headers=bearer(api.tokens()[who]))
    assert response.status_code == 200, response.text


def test_viewer_cannot_submit(api: Api, client: httpx.Client) -> None:
    before = counts(api)
    response = client.post("/api/v1/jobs", headers=bearer(api.viewer), json=simple("by-viewer"))
    assert response.status_code == 403, response.text
    assert "user" in response.json()["detail"]
    assert counts(api) == before


def test_user_submits_and_gets_the_job_id(api: Api, client: httpx.Client) -> None:
    before = counts(api)
    response = client.post("/api/v1/jobs", headers=bearer(api.alice), json=simple("by-alice"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id"}
    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    assert counts(api) == (before[0] + 1, before[1] + 1)
    job = client.get(f"/api/v1/jobs/{body['id']}", headers=bearer(api.viewer)).json()
    assert job["owner"] == "alice"
    assert job["name"] == "by-alice"


@pytest.mark.parametrize("who", ["alice", "viewer"])
def test_drain_is_admin_only(api: Api, client: httpx.Client, who: str) -> None:
    for node_id in ("unknown-node", GHOST_NODE):
        response = client.post(f"/api/v1/nodes/{node_id}/drain", headers=bearer(api.tokens()[who]))
        assert response.status_code == 403, response.text  # the role is checked before the node is looked up


def test_admin_drain_of_an_unknown_node_is_404(api: Api, client: httpx.Client) -> None:
    response = client.post("/api/v1/nodes/unknown-node/drain", headers=bearer(api.admin))
    assert response.status_code == 404, response.text
    assert "unknown-node" in response.json()["detail"]


def test_admin_drain_of_an_ended_node_is_409(api: Api, client: httpx.Client) -> None:
    response = client.post(f"/api/v1/nodes/{GHOST_NODE}/drain", headers=bearer(api.admin))
    assert response.status_code == 409, response.text
    assert "failed" in response.json()["detail"]


# -- submission --------------------------------------------------------------------------------

def test_s1_ortho_is_stored_and_only_its_first_task_is_published(api: Api, client: httpx.Client) -> None:
    before_jobs, before_tasks = counts(api)
    waiting_before = api.rt.broker.llen(ANY_QUEUE)
    response = client.post("/api/v1/jobs", headers=bearer(api.alice), json=S1_ORTHO)
    assert response.status_code == 201, response.text
    job_id = response.json()["id"]
    assert counts(api) == (before_jobs + 1, before_tasks + 42)
    assert api.rt.broker.llen(ANY_QUEUE) == waiting_before + 1  # fetch only: tile waits for it

    response = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(api.viewer))
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["id"] == job_id
    assert job["name"] == "s1-ortho"
    assert job["owner"] == "alice"
    assert job["state"] == "queued"
    assert job["created_at"].endswith("Z")
    assert job["started_at"] is None and job["finished_at"] is None
    assert job["progress"] == {"total": 42, "queued": 1, "pending": 41}

    tasks = job["tasks"]
    assert len(tasks) == 42
    for task in tasks:
        assert {"name", "index", "state", "node", "attempts"} <= set(task), task
        assert task["node"] is None
        assert task["attempts"] == 0
        assert task["labels"] == []
    assert Counter(t["name"] for t in tasks) == {"fetch": 1, "tile": 40, "zip": 1}
    assert sorted(t["index"] for t in tasks if t["name"] == "tile") == list(range(40))
    states = {(t["name"], t["state"]) for t in tasks}
    assert states == {("fetch", "queued"), ("tile", "pending"), ("zip", "pending")}
    fetch = next(t for t in tasks if t["name"] == "fetch")
    assert fetch["queued_at"] is not None and fetch["run"] == "builtin.sleep"

    listed = client.get("/api/v1/jobs", params={"limit": 500}, headers=bearer(api.viewer)).json()
    mine = [j for j in listed if j["id"] == job_id]
    assert len(mine) == 1
    assert mine[0]["state"] == "queued"
    assert mine[0]["progress"]["total"] == 42
    assert "tasks" not in mine[0]

    events = client.get("/api/v1/events", params={"job": job_id}, headers=bearer(api.viewer)).json()
    submitted = [e for e in events if e["kind"] == "job-submitted"]
    assert len(submitted) == 1
    assert submitted[0]["job"] == job_id
    assert "42 task(s)" in submitted[0]["message"] and "alice" in submitted[0]["message"]


def test_unknown_job_is_404(api: Api, client: httpx.Client) -> None:
    response = client.get("/api/v1/jobs/" + "0" * 32, headers=bearer(api.viewer))
    assert response.status_code == 404, response.text


def test_job_list_limit(api: Api, client: httpx.Client) -> None:
    submit(client, api.alice, simple("for-limit-1"))
    newest = submit(client, api.alice, simple("for-limit-2"))
    response = client.get("/api/v1/jobs", params={"limit": 1}, headers=bearer(api.viewer))
    assert response.status_code == 200
    assert [j["id"] for j in response.json()] == [newest]


def test_task_labels_choose_the_placement_queue(api: Api, client: httpx.Client) -> None:
    assert api.rt.broker.llen(ONPREM_QUEUE) == 0  # this test is the only one to use the label
    job_id = submit(client, api.alice, simple("placed", labels=["onprem"]))
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(api.alice)).json()
    assert [(t["labels"], t["state"]) for t in job["tasks"]] == [(["onprem"], "queued")]
    assert api.rt.broker.type(ONPREM_QUEUE) == b"list"
    assert api.rt.broker.llen(ONPREM_QUEUE) == 1
    message = json.loads(api.rt.broker.lindex(ONPREM_QUEUE, 0))
    assert message["headers"]["task"] == "builtin.sleep"
    assert message["headers"]["id"] == f"{job['tasks'][0]['id']}-1"
    # the controller sees the backlog as on-prem demand (and, with max_nodes 0, launches nothing)
    def onprem_demand() -> list[dict]:
        status = client.get("/api/v1/status", headers=bearer(api.viewer)).json()
        return [d for d in status.get("demand", []) if d["labels"] == ["onprem"]]

    assert wait_for(onprem_demand) == [{"labels": ["onprem"], "waiting": 1, "in_flight": 0}]


# -- validation --------------------------------------------------------------------------------

BAD_WORKFLOWS = {
    "unknown-dependency": (
        {"name": "w", "tasks": [{"name": "a", "run": "builtin.sleep"},
                                {"name": "b", "run": "builtin.sleep", "after": ["a", "nope"]}]},
        ["body", "tasks", 1, "after"], "unknown_dependency"),
    "cycle": (
        {"name": "w", "tasks": [{"name": "a", "run": "builtin.sleep", "after": ["b"]},
                                {"name": "b", "run": "builtin.sleep", "after": ["a"]}]},
        ["body", "tasks", 0, "after"], "cycle"),
    "self-dependency": (
        {"name": "w", "tasks": [{"name": "a", "run": "builtin.sleep", "after": ["a"]}]},
        ["body", "tasks", 0, "after"], "self_dependency"),
    "unknown-run": (simple(run="builtin.nope"), ["body", "tasks", 0, "run"], "unregistered_task"),
    "unplaceable-labels": (simple(labels=["gpu"]), ["body", "tasks", 0, "labels"], "unplaceable_labels"),
    "unplaceable-workflow-labels": (
        {**simple(), "labels": ["gpu"]}, ["body", "tasks", 0, "labels"], "unplaceable_labels"),
    "replicate-zero": (simple(replicate=0), ["body", "tasks", 0, "replicate"], "greater_than_equal"),
    "replicate-as-string": (simple(replicate="40"), ["body", "tasks", 0, "replicate"], "int_type"),
    "missing-name": ({"tasks": simple()["tasks"]}, ["body", "name"], "missing"),
    "missing-tasks": ({"name": "w"}, ["body", "tasks"], "missing"),
    "no-tasks": ({"name": "w", "tasks": []}, ["body", "tasks"], "too_short"),
    "unknown-top-level-key": ({**simple(), "bogus": 1}, ["body", "bogus"], "extra_forbidden"),
    "unknown-task-key": (simple(bogus=1), ["body", "tasks", 0, "bogus"], "extra_forbidden"),
    "duplicate-task-name": (
        {"name": "w", "tasks": [{"name": "a", "run": "builtin.sleep"}, {"name": "a", "run": "builtin.sleep"}]},
        ["body", "tasks", 1, "name"], "duplicate_name"),
    "not-an-object": ([1, 2], ["body"], "model_type"),
}


@pytest.mark.parametrize("body, loc, kind", list(BAD_WORKFLOWS.values()), ids=list(BAD_WORKFLOWS))
def test_bad_workflow_is_422_located_in_the_body(api: Api, client: httpx.Client, body: Any, loc: list, kind: str) -> None:
    before = counts(api)
    waiting = api.rt.broker.llen(ANY_QUEUE)
    response = client.post("/api/v1/jobs", headers=bearer(api.alice), json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    for item in detail:
        assert item["loc"][0] == "body", item
        assert isinstance(item["msg"], str) and item["msg"]
        assert isinstance(item["type"], str) and item["type"]
    assert any(item["loc"] == loc and item["type"] == kind for item in detail), detail
    assert counts(api) == before
    assert api.rt.broker.llen(ANY_QUEUE) == waiting


def test_a_json_string_body_is_not_a_workflow(api: Api, client: httpx.Client) -> None:
    before = counts(api)
    response = client.post("/api/v1/jobs", headers=bearer(api.alice), json=json.dumps(simple("encoded-twice")))
    assert response.status_code == 422, response.text
    assert counts(api) == before


def test_unknown_key_error_lists_the_allowed_keys(api: Api, client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs", headers=bearer(api.alice), json={**simple(), "taks": []})
    assert response.status_code == 422
    [item] = response.json()["detail"]
    assert item["loc"] == ["body", "taks"]
    assert "labels, name, tasks" in item["msg"] and "'tasks'" in item["msg"]  # and a did-you-mean hint


@pytest.mark.parametrize("raw", [
    pytest.param(b"not json", id="invalid-json"),
    pytest.param(b'{"name": "w", "tasks": [{"name": "a", "run": "builtin.sleep", "args": {"x": NaN}}]}', id="nan-arg"),
    pytest.param(b"", id="empty-body"),
])
def test_unparseable_body_is_422(api: Api, client: httpx.Client, raw: bytes) -> None:
    before = counts(api)
    response = client.post("/api/v1/jobs", headers={**bearer(api.alice), "Content-Type": "application/json"},
                           content=raw)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all(item["loc"][0] == "body" for item in detail), detail
    assert counts(api) == before


def test_every_error_is_listed_at_once(api: Api, client: httpx.Client) -> None:
    before = counts(api)
    body = {"name": "many", "tasks": [
        {"name": "a", "run": "builtin.nope"},
        {"name": "b", "run": "builtin.sleep", "labels": ["gpu"]},
        {"name": "c", "run": "builtin.sleep", "after": ["zz"]},
        {"name": "d", "run": "builtin.sleep", "after": ["e"]},
        {"name": "e", "run": "builtin.sleep", "after": ["d"]},
    ]}
    response = client.post("/api/v1/jobs", headers=bearer(api.alice), json=body)
    assert response.status_code == 422, response.text
    found = {(tuple(item["loc"]), item["type"]) for item in response.json()["detail"]}
    assert found == {
        (("body", "tasks", 0, "run"), "unregistered_task"),
        (("body", "tasks", 1, "labels"), "unplaceable_labels"),
        (("body", "tasks", 2, "after"), "unknown_dependency"),
        (("body", "tasks", 3, "after"), "cycle"),
    }
    # shape errors are reported together too
    response = client.post("/api/v1/jobs", headers=bearer(api.alice),
                           json={"bogus": True, "tasks": [{"name": "a", "run": "builtin.sleep", "replicate": 0}]})
    assert response.status_code == 422, response.text
    locs = {tuple(item["loc"]) for item in response.json()["detail"]}
    assert locs == {("body", "name"), ("body", "bogus"), ("body", "tasks", 0, "replicate")}
    assert counts(api) == before


# -- cancellation ------------------------------------------------------------------------------

def test_cancel_is_for_the_owner_and_happens_once(api: Api, client: httpx.Client) -> None:
    job_id = submit(client, api.alice, {"name": "to-cancel", "tasks": [
        {"name": "a", "run": "builtin.sleep", "args": {"seconds": 1}},
        {"name": "b", "run": "builtin.sleep", "replicate": 3, "after": ["a"]}]})
    for who, refusal in (("bob", 404), ("viewer", 403)):  # bob may not even know the job exists
        response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(api.tokens()[who]))
        assert response.status_code == refusal, (who, response.text)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(api.alice)).json()
    assert job["state"] == "queued"
    assert {t["state"] for t in job["tasks"]} == {"queued", "pending"}

    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(api.alice))
    assert response.status_code == 200, response.text
    assert response.json() == {"id": job_id, "cancelled": True}
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(api.alice)).json()
    assert job["state"] == "cancelled"
    assert job["finished_at"] is not None
    assert len(job["tasks"]) == 4
    assert all(t["state"] == "cancelled" and t["finished_at"] for t in job["tasks"]), job["tasks"]
    assert job["progress"] == {"total": 4, "cancelled": 4}
    events = client.get("/api/v1/events", params={"job": job_id, "kind": "job-finished"},
                        headers=bearer(api.alice)).json()
    assert [e["cause"] for e in events] == ["cancelled"]

    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(api.alice))
    assert response.status_code == 200, response.text
    assert response.json() == {"id": job_id, "cancelled": False}
    assert client.get(f"/api/v1/jobs/{job_id}", headers=bearer(api.alice)).json()["state"] == "cancelled"
    # the dispatcher never publishes tasks of a cancelled job (the controller ticks every 0.5 s)
    time.sleep(1.2)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=bearer(api.alice)).json()
    assert {t["state"] for t in job["tasks"]} == {"cancelled"}


def test_admin_cancels_anyones_job(api: Api, client: httpx.Client) -> None:
    job_id = submit(client, api.bob, simple("bobs"))
    response = client.post(f"/api/v1/jobs/{job_id}/cancel", headers=bearer(api.admin))
    assert response.status_code == 200, response.text
    assert response.json()["cancelled"] is True


def test_cancel_unknown_job_is_404(api: Api, client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs/" + "f" * 32 + "/cancel", headers=bearer(api.alice))
    assert response.status_code == 404, response.text


# -- cluster views -----------------------------------------------------------------------------

def test_pools_list_both_pools_with_their_config(api: Api, client: httpx.Client) -> None:
    response = client.get("/api/v1/pools", headers=bearer(api.viewer))
    assert response.status_code == 200
    pools = {p["name"]: p for p in response.json()}
    assert list(pools) == ["onprem", "burst"]
    expected = {
        "onprem": {"provider": "local", "priority": 0, "slots": 2, "min_nodes": 0, "max_nodes": 0,
                   "labels": ["onprem"], "price_per_hour": 0.0, "nodes": {}},
        "burst": {"provider": "local", "priority": 10, "slots": 2, "min_nodes": 0, "max_nodes": 0,
                  "labels": [], "price_per_hour": 0.0, "nodes": {}},
    }
    for name, fields in expected.items():
        assert {k: pools[name][k] for k in fields} == fields
        assert "target_nodes" in pools[name]


def test_nodes_list_live_nodes_and_all_with_a_flag(api: Api, client: httpx.Client) -> None:
    response = client.get("/api/v1/nodes", headers=bearer(api.viewer))
    assert response.status_code == 200
    assert response.json() == []  # no agents; the ghost node has ended
    everything = client.get("/api/v1/nodes", params={"all": "true"}, headers=bearer(api.viewer)).json()
    assert [n["id"] for n in everything] == [GHOST_NODE]
    by_state = client.get("/api/v1/nodes", params={"state": "failed"}, headers=bearer(api.viewer)).json()
    assert [n["id"] for n in by_state] == [GHOST_NODE]
    assert client.get("/api/v1/nodes", params={"all": "true", "pool": "onprem"},
                      headers=bearer(api.viewer)).json() == []


def test_node_detail_has_its_history(api: Api, client: httpx.Client) -> None:
    response = client.get(f"/api/v1/nodes/{GHOST_NODE}", headers=bearer(api.viewer))
    assert response.status_code == 200, response.text
    node = response.json()
    assert node["id"] == GHOST_NODE and node["pool"] == "burst" and node["state"] == "failed"
    assert node["ended_at"] is not None
    assert [(h["from"], h["to"]) for h in node["history"]] == [(None, "requested"), ("requested", "failed")]


def test_unknown_node_is_404(api: Api, client: httpx.Client) -> None:
    response = client.get("/api/v1/nodes/unknown", headers=bearer(api.viewer))
    assert response.status_code == 404, response.text


def test_events_filter_by_kind_and_limit(api: Api, client: httpx.Client) -> None:
    first = submit(client, api.alice, simple("ev-1"))
    second = submit(client, api.alice, simple("ev-2"))
    headers = bearer(api.viewer)
    submitted = client.get("/api/v1/events", params={"kind": "job-submitted"}, headers=headers).json()
    assert len(submitted) >= 2
    assert {e["kind"] for e in submitted} == {"job-submitted"}
    assert {first, second} <= {e["job"] for e in submitted}
    ids = [e["id"] for e in submitted]
    assert ids == sorted(ids)  # oldest first

    latest = client.get("/api/v1/events", params={"kind": "job-submitted", "limit": 1}, headers=headers).json()
    assert [e["job"] for e in latest] == [second]
    two = client.get("/api/v1/events", params={"kind": "job-submitted", "limit": 2}, headers=headers).json()
    assert [e["job"] for e in two] == [first, second]
    after = client.get("/api/v1/events", params={"kind": "job-submitted", "since_id": latest[0]["id"]},
                       headers=headers).json()
    assert after == []
    assert client.get("/api/v1/events", params={"kind": "no-such-kind"}, headers=headers).json() == []
    everything = client.get("/api/v1/events", params={"limit": 2000}, headers=headers).json()
    assert len(everything) >= len(submitted)


def test_status_reports_controller_ticks(api: Api, client: httpx.Client) -> None:
    status = wait_for(lambda: (s := client.get("/api/v1/status", headers=bearer(api.viewer)).json())
                      .get("ticks", 0) >= 2 and s)
    assert status and status["errors"] == 0
    assert {t["pool"] for t in status["targets"]} == {"onprem", "burst"}
    assert all(t["target_nodes"] == 0 for t in status["targets"])


# -- request size ------------------------------------------------------------------------------

def _padded(size: int) -> bytes:
    """A valid workflow padded with JSON whitespace to exactly ``size`` bytes."""
    text = json.dumps(simple("padded")).encode()
    return text + b" " * (size - len(text))


def test_body_over_the_limit_is_413(api: Api, client: httpx.Client) -> None:
    before = counts(api)
    response = client.post("/api/v1/jobs", headers={**bearer(api.alice), "Content-Type": "application/json"},
                           content=_padded(MAX_BODY_BYTES + 1))
    assert response.status_code == 413, response.text
    assert counts(api) == before
    big = client.post("/api/v1/jobs", headers={**bearer(api.alice), "Content-Type": "application/json"},
                      content=_padded(3 * 1024 * 1024))
    assert big.status_code == 413
    assert counts(api) == before


def test_body_at_the_limit_is_accepted(api: Api, client: httpx.Client) -> None:
    response = client.post("/api/v1/jobs", headers={**bearer(api.alice), "Content-Type": "application/json"},
                           content=_padded(MAX_BODY_BYTES))
    assert response.status_code == 201, response.text


def test_chunked_body_over_the_limit_is_413(api: Api, client: httpx.Client) -> None:
    before = counts(api)
    payload = _padded(3 * 1024 * 1024)

    def chunks() -> Iterator[bytes]:  # an iterator body: httpx sends it chunked, without Content-Length
        for start in range(0, len(payload), 64 * 1024):
            yield payload[start:start + 64 * 1024]

    response = client.post("/api/v1/jobs", headers={**bearer(api.alice), "Content-Type": "application/json"},
                           content=chunks())
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert response.status_code == 413, response.text
    assert counts(api) == before


# -- secrets -----------------------------------------------------------------------------------

def test_no_get_response_reveals_a_token_or_its_hash(api: Api, client: httpx.Client) -> None:
    job_id = submit(client, api.alice, S1_ORTHO)
    submit(client, api.admin, simple("by-admin"))
    secrets = {}
    for name, token in api.tokens().items():
        secrets[f"{name} token"] = token
        secrets[f"{name} token hash"] = hash_token(token)
    assert api.rt.token_path.read_text().strip() == api.admin
    values = {"job_id": job_id, "node_id": GHOST_NODE}
    paths = {re.sub(r"\{([^}]+)\}", lambda m: values.get(m[1], "x"), path)
             for method, path in live_routes(api, client) if method == "GET"}
    paths |= {"/openapi.json", "/docs", "/redoc", "/healthz", "/api/v1/nodes?all=true",
              "/api/v1/events?limit=2000", "/api/v1/jobs?limit=500"}
    assert f"/api/v1/jobs/{job_id}" in paths and f"/api/v1/nodes/{GHOST_NODE}" in paths
    leaks = []
    for path in sorted(paths):
        for who, token in api.tokens().items():
            response = client.get(path, headers=bearer(token))
            admin_only = path in ADMIN_ONLY_READS and who != "admin"
            assert response.status_code in ((403,) if admin_only else (200, 404)), (path, who, response.status_code)
            for label, secret in secrets.items():
                if secret in response.text:
                    leaks.append(f"GET {path} as {who} contains the {label}")
    assert not leaks, "\n".join(leaks)
