"""Secrets never leave: cloud credentials, API tokens (and their hashes), the broker password
and the one-time bootstrap tokens appear in no log line, no event and no API response.

One real run holds every kind of secret at once: a password-protected broker (our own
``redis-server --requirepass``), ``RM_ADMIN_TOKEN``, user and viewer tokens, and a burst pool on
the fake Azure (HTTPS, client secret in the environment as an admin would set it) that launches
a VM with a bootstrap token in its user data; a wrong enrolment, a bad workflow, an unknown
node and a bad policy produce the error answers. Then every GET route is read with every token,
and the logs, the events table and every answer are searched.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from rm.auth import hash_token
from rm.broker import free_port, redis_server_binary
from rm.models import BootstrapToken, Job, Node, ScalingEvent
from tests.e2e_support import wait_for
from tests.fakes import azure
from tests.security_support import (Secured, bearer, bootstrap_tokens_in, collect_get_responses, leaks,
                                    redis_server, start_secured)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def broker_password(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(URL, password) of a redis-server that wants a password; stopped at teardown."""
    password = "broker-pw-" + secrets.token_urlsafe(16)
    port = free_port()
    tmp = tmp_path_factory.mktemp("broker")
    argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password,
            "--save", "", "--appendonly", "no", "--dir", str(tmp)]
    with redis_server(argv, f"redis://:{password}@127.0.0.1:{port}/0", "the password-protected broker") as url:
        yield url, password


class Lines(logging.Handler):
    """Every record, formatted with its arguments, from the whole run (manager threads included)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


@pytest.fixture(scope="module")
def log_lines() -> Iterator[Lines]:
    handler, root = Lines(), logging.getLogger()
    watched = [root, logging.getLogger("uvicorn.access"), logging.getLogger("uvicorn.error")]
    level = root.level
    root.setLevel(logging.INFO)
    for logger in watched:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in watched:
            logger.removeHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, broker_password: tuple[str, str],
        log_lines: Lines) -> Iterator[tuple[Secured, dict]]:
    """The secured manager after a burst into the fake Azure, with the secrets it holds by label."""
    tmp = tmp_path_factory.mktemp("secrets")
    url, password = broker_password
    with azure.start(tmp) as cloud:
        pools = [{"name": "onprem", "provider": "local", "priority": 0, "slots": 1, "min_nodes": 1, "max_nodes": 1},
                 {"name": "burst", "provider": "azure", "priority": 10, "slots": 1, "min_nodes": 0, "max_nodes": 1,
                  "boot_timeout_s": 300, "settings": cloud.settings, "bootstrap": {"install": "none", "os_packages": []},
                  "list_interval_s": 1}]
        for secured in start_secured(tmp, broker=url, pools=pools, policy={"tick_s": 0.5, "load_factor": 1.0}):
            labelled = {f"{who} token": token for who, token in secured.tokens.items()}
            labelled |= {f"{who} token hash": hash_token(token) for who, token in secured.tokens.items()}
            labelled |= {f"cloud credential {name}": value for name, value in cloud.env.items()}
            labelled["broker password"] = password
            _exercise(secured, cloud)
            with secured.rt.store.session() as session:
                labelled |= {f"bootstrap token hash of {b.node_id}": b.token_hash
                             for b in session.scalars(select(BootstrapToken))}
            labelled |= {f"bootstrap token of {vm.name}": token for vm in cloud.state.vms.values()
                         for token in bootstrap_tokens_in(vm.user_data)}
            yield secured, labelled


def _exercise(secured: Secured, cloud) -> None:  # noqa: ANN001 - a CloudUnderTest
    """A burst into the cloud (a VM with a bootstrap token), then a few requests that fail."""
    alice = bearer(secured.tokens["alice"])
    with httpx.Client(base_url=secured.url, timeout=30) as client:
        job = {"name": "burst", "tasks": [{"name": "s", "run": "builtin.sleep", "args": {"seconds": 4}, "replicate": 3}]}
        assert client.post("/api/v1/jobs", headers=alice, json=job).status_code == 201
        wait_for("a VM in the fake Azure", lambda: cloud.state.vms, timeout_s=120)
        node = next(iter(cloud.state.vms.values())).name
        assert client.post(f"/api/v1/agents/{node}/enrol", headers=bearer("wrong-" + "x" * 40)).status_code == 401
        assert client.post("/api/v1/jobs", headers=alice, json={"name": "bad", "tasks": [{"run": "nope"}]}).status_code == 422
        assert client.post("/api/v1/nodes/nope/drain", headers=bearer(secured.tokens["admin"])).status_code == 404
        assert client.put("/api/v1/policy", headers=bearer(secured.tokens["admin"]),
                          json={"pools": {"burst": {"max_nodes": -1}}}).status_code == 422
        assert client.get("/api/v1/whoami", headers=bearer(secured.tokens["admin"][:-1])).status_code == 401


@pytest.fixture(scope="module")
def job_id(run: tuple[Secured, dict]) -> str:
    with run[0].rt.store.session() as session:
        return session.scalars(select(Job.id)).first()


def test_the_run_held_every_kind_of_secret(run: tuple[Secured, dict]) -> None:
    _secured, labelled = run
    kinds = {label.split(" of ")[0].split(" token")[0] for label in labelled}
    assert any(label.startswith("cloud credential") for label in labelled)
    assert any(label.startswith("bootstrap token of") for label in labelled), "the VM's user data carried a token"
    assert "broker password" in labelled and "admin token" in labelled, kinds


def test_no_api_response_holds_a_secret(run: tuple[Secured, dict], job_id: str) -> None:
    secured, labelled = run
    node = next(n.id for n in _nodes(secured) if n.pool == "burst")
    bodies = collect_get_responses(secured, {"job_id": job_id, "node_id": node, "name": "app.js"})
    assert len(bodies) >= 4 * 20
    found = [f"{request} holds the {label}" for request, body in bodies.items() for label in leaks(body, labelled)]
    assert not found, "\n".join(found)


def test_no_event_holds_a_secret(run: tuple[Secured, dict]) -> None:
    secured, labelled = run
    with secured.rt.store.session() as session:
        events = list(session.scalars(select(ScalingEvent)))
    assert {"launch", "enrol-refused"} <= {e.kind for e in events}
    found = [f"event {e.id} ({e.kind}) holds the {label}" for e in events
             for label in leaks(f"{e.cause} {e.message} {e.data}", labelled)]
    assert not found, "\n".join(found)


def test_no_log_line_holds_a_secret(run: tuple[Secured, dict], log_lines: Lines) -> None:
    _secured, labelled = run
    text = "\n".join(log_lines.lines)
    assert "enrolment as node" in text and "launch" in text, "the run's log lines were captured"
    found = [f"the manager's log holds the {label}" for label in leaks(text, labelled)]
    assert not found, "\n".join(found)


def test_no_agent_log_holds_a_secret(run: tuple[Secured, dict]) -> None:
    secured, labelled = run
    logs = {path: path.read_text(errors="replace") for path in Path(secured.rt.state_dir).rglob("*.log")}
    assert any("ready." in text for text in logs.values()), f"the on-prem agent's log was found: {sorted(logs)}"
    found = [f"{path.name} holds the {label}" for path, text in logs.items() for label in leaks(text, labelled)]
    assert not found, "\n".join(found)


def _nodes(secured: Secured) -> list[Node]:
    with secured.rt.store.session() as session:
        return list(session.scalars(select(Node)))
