"""Every route of the app, walked from its route table: who may call it.

The table comes from FastAPI's route contexts (included routers and routes hidden from the
OpenAPI spec included), so a route added later is checked without editing this file: it
needs a token (401 without), and unless listed in ``NEEDS`` any role may read it.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from rm.api.deps import ROLE_RANK
from rm.auth import Role
from tests.security_support import Secured, fill, loopback_client, served_routes, start_secured, submit

pytestmark = pytest.mark.timeout(120)

OPEN = {("GET", "/healthz")}
ENROL = ("POST", "/api/v1/agents/{node_id}/enrol")  # a node's bootstrap token, never an API token
COOKIE_ONLY = {("GET", "/"), ("POST", "/login"), ("POST", "/logout")}  # the browser's sign-in pages
NEEDS = {
    ("POST", "/api/v1/jobs"): Role.USER,
    ("POST", "/api/v1/jobs/{job_id}/cancel"): Role.USER,
    ("POST", "/api/v1/nodes/{node_id}/drain"): Role.ADMIN,
    ("PUT", "/api/v1/policy"): Role.ADMIN,
    ("POST", "/api/v1/policy/validate"): Role.ADMIN,
    ("POST", "/api/v1/policy/dry-run"): Role.ADMIN,
    ("GET", "/api/v1/costs"): Role.ADMIN,
}
ROLE_OF = {"vera": Role.VIEWER, "alice": Role.USER, "admin": Role.ADMIN}
BODY = {"name": "roles", "tasks": [{"name": "a", "run": "builtin.sleep", "args": {"seconds": 0.1}}]}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from start_secured(tmp_path_factory.mktemp("roles"))


@pytest.fixture
def client(secured: Secured) -> Iterator[httpx.Client]:
    with loopback_client(secured.url) as http:  # its own address: enrolment refusals are throttled per client
        yield http


def _call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = BODY if method in ("POST", "PUT") and path == "/api/v1/jobs" else ({} if method in ("POST", "PUT") else None)
    return client.request(method, fill(path), headers=headers, json=body)


def test_the_route_table_covers_the_api_the_docs_and_the_dashboard(secured: Secured) -> None:
    routes = set(served_routes(secured))
    assert {*OPEN, ENROL, *COOKIE_ONLY, *NEEDS} <= routes, {*OPEN, ENROL, *COOKIE_ONLY, *NEEDS} - routes
    assert {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc"), ("GET", "/metrics"),
            ("GET", "/static/{name}")} <= routes
    assert len(routes) >= 29


@pytest.mark.parametrize("credentials", [None, "Bearer not-a-token-at-all-but-long-enough", "Basic YWRtaW46YWRtaW4="])
def test_no_route_but_healthz_answers_without_a_valid_token(secured: Secured, client: httpx.Client,
                                                            credentials: str | None) -> None:
    headers = {} if credentials is None else {"Authorization": credentials}
    wrong = [f"{method} {path}: {response.status_code}" for method, path in served_routes(secured)
             if (method, path) not in OPEN
             and (response := _call(client, method, path, headers)).status_code != 401]
    assert not wrong, "\n".join(wrong)
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("csrf", [{"X-Requested-With": "x"}, {}])
def test_a_forged_session_cookie_is_401_everywhere(secured: Secured, csrf: dict[str, str]) -> None:
    wrong = []
    with loopback_client(secured.url, cookies={"rm_session": secured.tokens["admin"]}, headers=csrf) as forged:
        for method, path in served_routes(secured):
            if (method, path) not in OPEN and (response := _call(forged, method, path, {})).status_code != 401:
                wrong.append(f"{method} {path}: {response.status_code}")
    assert not wrong, "an API token is not a session id:\n" + "\n".join(wrong)


@pytest.mark.parametrize("who", ["vera", "alice", "admin"])
def test_each_role_gets_403_exactly_where_its_role_is_too_low(secured: Secured, client: httpx.Client, who: str) -> None:
    wrong = []
    for method, path in served_routes(secured):
        if (method, path) in OPEN | COOKIE_ONLY:
            continue
        response = _call(client, method, path, secured.headers(who))
        if (method, path) == ENROL:
            expected_refusal = response.status_code == 401  # an API token is not a bootstrap token
        elif ROLE_RANK[ROLE_OF[who]] < ROLE_RANK[NEEDS.get((method, path), Role.VIEWER)]:
            expected_refusal = response.status_code == 403
        else:
            expected_refusal = response.status_code not in (401, 403)
        if not expected_refusal:
            wrong.append(f"{method} {path} as {who}: {response.status_code} {response.text[:120]}")
    assert not wrong, "\n".join(wrong)


def test_a_user_cannot_change_the_policy(secured: Secured, client: httpx.Client) -> None:
    before = client.get("/api/v1/policy", headers=secured.headers("alice")).json()
    change = {"pools": {"onprem": {"max_nodes": 0, "min_nodes": 0}}, "policy": {"load_factor": 3.0}}
    for path, method in (("/api/v1/policy", "PUT"), ("/api/v1/policy/validate", "POST"), ("/api/v1/policy/dry-run", "POST")):
        response = client.request(method, path, headers=secured.headers("alice"), json=change)
        assert response.status_code == 403 and "admin" in response.json()["detail"], (path, response.text)
    assert client.get("/api/v1/policy", headers=secured.headers("alice")).json() == before
    assert client.get("/api/v1/policy/history", headers=secured.headers("admin")).json() == []


def test_a_user_cannot_drain_a_node(secured: Secured, client: httpx.Client) -> None:
    response = client.post("/api/v1/nodes/onprem-1/drain", headers=secured.headers("alice"))
    assert response.status_code == 403, response.text


def test_a_user_sees_and_cancels_only_their_own_jobs(secured: Secured, client: httpx.Client) -> None:
    bobs = submit(client, secured.tokens["bob"], "bobs")
    alices = submit(client, secured.tokens["alice"], "alices")
    alice = secured.headers("alice")
    assert client.get(f"/api/v1/jobs/{bobs}", headers=alice).status_code == 404
    assert client.post(f"/api/v1/jobs/{bobs}/cancel", headers=alice).status_code == 404
    assert client.get(f"/api/v1/jobs/{bobs}", headers=secured.headers("bob")).json()["state"] != "cancelled"
    listed = {job["id"] for job in client.get("/api/v1/jobs", params={"limit": 500}, headers=alice).json()}
    assert alices in listed and bobs not in listed
    events = client.get("/api/v1/events", params={"limit": 2000}, headers=alice).json()
    jobs_in_events = {e["job"] for e in events if e["job"]}
    assert alices in jobs_in_events and jobs_in_events <= listed, "alice reads only her own jobs' events"
    assert client.get("/api/v1/events", params={"job": bobs}, headers=alice).json() == []
    # an admin sees and cancels all; a viewer watches all, read-only
    for who in ("admin", "vera"):
        seen = {job["id"] for job in client.get("/api/v1/jobs", params={"limit": 500}, headers=secured.headers(who)).json()}
        assert {bobs, alices} <= seen, who
        assert client.get(f"/api/v1/jobs/{bobs}", headers=secured.headers(who)).status_code == 200
    assert client.post(f"/api/v1/jobs/{bobs}/cancel", headers=secured.headers("vera")).status_code == 403
    response = client.post(f"/api/v1/jobs/{bobs}/cancel", headers=secured.headers("admin"))
    assert response.status_code == 200 and response.json()["cancelled"] is True


def test_the_docs_open_with_any_token_and_the_spec_documents_the_bearer_scheme(secured: Secured, client: httpx.Client) -> None:
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=secured.headers("vera")).status_code == 200, path
    spec = client.get("/openapi.json", headers=secured.headers("vera")).json()
    schemes = spec["components"]["securitySchemes"].values()
    assert any(s["type"] == "http" and s["scheme"].lower() == "bearer" for s in schemes)


def test_the_admin_token_seeded_from_the_environment_is_an_admin(secured: Secured, client: httpx.Client) -> None:
    assert client.get("/api/v1/whoami", headers=secured.headers("admin")).json() == {"name": "env-admin", "role": "admin"}
