"""Hostile input: ``builtin.shell`` off unless an admin enables it (refused by the manager *and*
the agent), a shell command's clean environment, NUL characters refused with 422 naming the
field, bounded integer query parameters, the request size limit checked before anything else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from agents.shell import SHELL_TASK, ShellDisabled, run_shell, shell_task
from agents.tasks import TASK_NAMES
from rm.api.app import MAX_BODY_BYTES
from rm.models import Job, Node, PolicyVersion
from rm.workflow import validate_workflow
from tests.helpers import wait_until
from tests.security_support import CLUSTER, Secured, bearer, start_secured

pytestmark = pytest.mark.timeout(120)

SHELL_JOB = {"name": "sneaky", "tasks": [
    {"name": "fetch", "run": "builtin.sleep", "args": {"seconds": 0.1}},
    {"name": "own-the-node", "run": SHELL_TASK, "args": {"command": "id"}, "after": ["fetch"]}]}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A manager with one on-prem agent (min 1), builtin.shell left at its default: off."""
    pools = [{"name": "onprem", "provider": "local", "priority": 0, "slots": 1, "min_nodes": 1, "max_nodes": 1}]
    yield from start_secured(tmp_path_factory.mktemp("hostile"), pools=pools)


@pytest.fixture(scope="module")
def client(secured: Secured) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=secured.url, timeout=30, headers=bearer(secured.tokens["alice"])) as http:
        yield http


def jobs_stored(secured: Secured) -> int:
    with secured.rt.store.session() as session:
        return session.scalar(select(func.count()).select_from(Job))


# -- builtin.shell -------------------------------------------------------------------------------

def test_a_shell_workflow_is_422_shell_disabled_naming_the_task(secured: Secured, client: httpx.Client) -> None:
    before = jobs_stored(secured)
    response = client.post("/api/v1/jobs", json=SHELL_JOB)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["type"] == "shell_disabled" and error["loc"] == ["body", "tasks", 1, "run"]
    assert "'own-the-node'" in error["msg"] and "agent.allow_shell" in error["msg"]
    assert jobs_stored(secured) == before


def test_an_admin_enabled_shell_passes_validation() -> None:
    spec = validate_workflow(SHELL_JOB, registered=TASK_NAMES, pool_label_sets=[frozenset()], allow_shell=True)
    assert [t.run for t in spec.tasks] == ["builtin.sleep", SHELL_TASK]


def test_the_agent_refuses_a_shell_message_that_bypassed_the_manager(secured: Secured, tmp_path: Path) -> None:
    wait_until(lambda: any(n.status == "idle" for n in _nodes(secured)), "the on-prem agent to be ready")
    marker = tmp_path / "owned"
    result = secured.rt.app.send_task(SHELL_TASK, kwargs={"command": f"touch {marker}"}, queue=f"rm.{CLUSTER}")
    wait_until(lambda: result.ready(), "the agent to answer the shell message")
    assert result.state == "FAILURE"
    assert "disabled on this agent" in str(result.result)
    assert not marker.exists()


def _nodes(secured: Secured) -> list[Node]:
    with secured.rt.store.session() as session:
        return list(session.scalars(select(Node)))


def test_an_allowed_shell_command_inherits_no_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {"RM_ADMIN_TOKEN": "admin-" + "s" * 30, "AZURE_CLIENT_SECRET": "azure-secret-value",
               "OS_PASSWORD": "openstack-password", "RM_AGENT_SETTINGS": '{"broker_url": "redis://:pw@h/0"}'}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    result = run_shell("env; pwd")
    lines = result["stdout"].splitlines()
    names = {line.split("=", 1)[0] for line in lines if "=" in line}
    assert names <= {"PATH", "LANG", "HOME", "PWD", "SHLVL", "_"}, names
    assert not [v for v in secrets.values() if v in result["stdout"]]
    assert lines[-1].startswith("/tmp") or "rm-shell-" in lines[-1]


def test_shell_failures_and_bad_commands_fail_the_task() -> None:
    with pytest.raises(RuntimeError, match="exited with 3"):
        run_shell("echo boom >&2; exit 3")
    for bad in ("", "   ", "x" * 20000, "a\x00b", ["ls"]):
        with pytest.raises(ValueError, match="command must be"):
            run_shell(bad)  # type: ignore[arg-type]
    with pytest.raises(ShellDisabled):
        shell_task(False)(command="true")
    assert shell_task(True)(command="echo ok")["stdout"] == "ok\n"


# -- NUL characters ------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "params", "body", "loc"), [
    ("POST", "/api/v1/jobs", None, {"name": "n", "tasks": [{"name": "a", "run": "builtin.echo", "args": {"x": "a\x00b"}}]},
     ["body", "tasks", 0, "args", "x"]),
    ("POST", "/api/v1/jobs", None, {"name": "n", "tasks": [{"name": "a", "run": "builtin.echo", "args": {"k\x00": 1}}]},
     ["body", "tasks", 0, "args", "k\x00"]),
    ("GET", "/api/v1/events", {"pool": "on\x00prem"}, None, ["query", "pool"]),
    ("GET", "/api/v1/nodes", {"state": "\x00"}, None, ["query", "state"]),
    ("GET", "/api/v1/jobs/ab%00cd", None, None, ["path"]),
    ("PUT", "/api/v1/policy", None, {"pools": {"onprem": {"windows": [{"cron": "0 8 * * \x00", "duration_s": 60}]}}},
     ["body", "pools", "onprem", "windows", 0, "cron"]),
])
def test_a_nul_character_is_422_naming_the_field(secured: Secured, method: str, path: str, params: dict | None,
                                                 body: dict | None, loc: list) -> None:
    before = jobs_stored(secured), _versions(secured)
    with httpx.Client(base_url=secured.url, headers=bearer(secured.tokens["admin"])) as admin:
        response = admin.request(method, path, params=params, json=body)
    assert response.status_code == 422, response.text
    assert [e["loc"] for e in response.json()["detail"]] == [loc]
    assert response.json()["detail"][0]["type"] == "nul_character"
    assert (jobs_stored(secured), _versions(secured)) == before


def _versions(secured: Secured) -> int:
    with secured.rt.store.session() as session:
        return session.scalar(select(func.count()).select_from(PolicyVersion))


# -- integer query parameters and size -----------------------------------------------------------

@pytest.mark.parametrize("since_id", ["-1", str(2**31), str(10**30), "1e3", "NaN"])
def test_since_id_out_of_range_is_422_naming_it(client: httpx.Client, since_id: str) -> None:
    response = client.get("/api/v1/events", params={"since_id": since_id})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "since_id"]


@pytest.mark.parametrize("limit", ["0", "-5", str(10**30)])
def test_huge_or_negative_limits_are_clamped_not_500(client: httpx.Client, limit: str) -> None:
    for path in ("/api/v1/events", "/api/v1/jobs", "/api/v1/policy/history"):
        assert client.get(path, params={"limit": limit}).status_code == 200, path


def test_the_size_limit_comes_before_the_body_is_read_for_nul(client: httpx.Client, secured: Secured) -> None:
    before = jobs_stored(secured)
    body = b'{"name": "big", "tasks": [{"name": "a", "run": "builtin.echo", "args": {"x": "\\u0000' + \
        b"x" * MAX_BODY_BYTES + b'"}}]}'
    response = client.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 413, response.text
    assert jobs_stored(secured) == before


@pytest.mark.parametrize("depth", [900, 5000, 100_000])
def test_a_deeply_nested_body_with_a_nul_is_never_a_5xx(secured: Secured, depth: int) -> None:
    """The NUL check parses the body before authentication: nesting past the JSON parser's depth
    must be answered like any body the route cannot read, not with a crash."""
    body = b'{"a": ' * depth + b'"\\u0000"' + b"}" * depth
    with httpx.Client(base_url=secured.url, timeout=30) as anonymous:
        response = anonymous.post("/api/v1/jobs", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 401, 422), (depth, response.status_code, response.text[:200])
