"""Enrolment refusals over real HTTP: 401 for a token nobody issued, 403 for a real token that
may not be used (expired, replayed, another node's, a node given up), every refusal an event,
a log line without the token and a count in ``rm_enrol_refusals_total{reason}``; 429 after 10
refusals a minute from one client.

Each client sends from its own loopback address (127.0.0.x), so each is its own throttle client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import select

from rm.enrolment import issue_token
from rm.lifecycle import change_status, create_node
from rm.metrics import ENROL_REFUSALS
from rm.models import Node, ScalingEvent
from rm.states import NodeStatus
from rm.throttle import RefusalThrottle
from tests.security_support import Secured, bearer, loopback_client, start_secured

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from start_secured(tmp_path_factory.mktemp("enrol"))


def booting(secured: Secured, node_id: str, ttl_s: float = 120) -> str:
    """A node that is booting, and its one-time token."""
    now = time.time()
    with secured.rt.store.session() as session:
        node = Node(id=node_id, cluster="sectest", pool="onprem", provider="local", slots=2, labels=[])
        create_node(session, node, "test: launch requested", now)
        change_status(session, node, NodeStatus.PROVISIONING, "test: handed to the provider", now)
        return issue_token(session, node_id, now, ttl_s=ttl_s)


def enrol(client: httpx.Client, node_id: str, token: str | None) -> httpx.Response:
    return client.post(f"/api/v1/agents/{node_id}/enrol", headers=bearer(token) if token else {})


def refusals(reason: str) -> float:
    return ENROL_REFUSALS.labels(reason=reason)._value.get()


def test_unknown_is_401_and_real_but_unusable_tokens_are_403(secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    mine, theirs = booting(secured, "onprem-e1"), booting(secured, "onprem-e2")
    expired = booting(secured, "onprem-e3", ttl_s=-1)
    gone = booting(secured, "onprem-e4")
    with secured.rt.store.session() as session:
        change_status(session, session.get(Node, "onprem-e4"), NodeStatus.FAILED, "test: boot timeout", time.time())
    before = {r: refusals(r) for r in ("unknown-token", "WRONG_NODE", "expired-token", "replayed-token", "node-not-booting")}
    with loopback_client(secured.url) as client, caplog.at_level(logging.WARNING):
        for node_id, token, code, reason in (("onprem-e1", "g" * 43, 401, "unknown-token"),
                                             ("onprem-e1", theirs, 403, "WRONG_NODE"),
                                             ("onprem-e3", expired, 403, "expired-token"),
                                             ("onprem-e4", gone, 403, "node-not-booting")):
            response = enrol(client, node_id, token)
            assert response.status_code == code and reason in response.json()["detail"], (reason, response.text)
            assert token not in response.text
        assert enrol(client, "onprem-e1", mine).status_code == 200
        replay = enrol(client, "onprem-e1", mine)
        assert replay.status_code == 403 and "replayed-token" in replay.json()["detail"]
    assert {r: refusals(r) - before[r] for r in before} == dict.fromkeys(before, 1.0)
    with secured.rt.store.session() as session:
        causes = [e.cause for e in session.scalars(select(ScalingEvent).where(ScalingEvent.kind == "enrol-refused"))]
    assert sorted(causes) == sorted(before)
    refused_lines = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused_lines) == 5 and all(" from 127.0.0." in line for line in refused_lines)
    assert not [t for t in (mine, theirs, expired, gone, "g" * 43) if t in caplog.text], "a token reached the log"


def test_a_missing_token_is_401_with_the_bearer_challenge(secured: Secured) -> None:
    with loopback_client(secured.url) as client:
        response = enrol(client, "onprem-e1", None)
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"


def test_ten_refusals_a_minute_and_the_client_gets_429_even_with_a_good_token(secured: Secured) -> None:
    good = booting(secured, "onprem-t1")
    throttled = refusals("throttled")
    with loopback_client(secured.url) as guesser:
        codes = [enrol(guesser, "onprem-t1", f"guess-{i:02d}-" + "x" * 30).status_code for i in range(10)]
        assert codes == [401] * 10
        blocked = enrol(guesser, "onprem-t1", good)
        assert blocked.status_code == 429 and 1 <= int(blocked.headers["retry-after"]) <= 60
    assert refusals("throttled") == throttled + 1
    with loopback_client(secured.url) as other:  # another client is not slowed down by the guesser
        assert enrol(other, "onprem-t1", good).status_code == 200


def test_real_tokens_refused_never_throttle_a_shared_address(secured: Secured) -> None:
    """403s are no guesses: VMs behind one NAT address whose tokens are stale must not lock out the rest."""
    stale, good = booting(secured, "onprem-n1"), booting(secured, "onprem-n2")
    with loopback_client(secured.url) as nat:
        assert {enrol(nat, "onprem-n2", stale).status_code for _ in range(12)} == {403}  # WRONG_NODE each time
        assert enrol(nat, "onprem-n2", good).status_code == 200


def test_the_throttle_window_slides() -> None:
    throttle = RefusalThrottle(limit=3, window_s=60, max_clients=2)
    for at in (0.0, 10.0, 20.0):
        assert throttle.retry_after("a", at) is None
        throttle.refused("a", at)
    assert throttle.retry_after("a", 30.0) == 30  # the first refusal leaves the window at 60
    assert throttle.retry_after("a", 60.5) is None
    throttle.refused("b", 61.0)
    throttle.refused("c", 62.0)  # over max_clients: the least recently refused ("a") is forgotten
    assert throttle.retry_after("a", 30.0) is None
