"""Shared helpers for the security tests: a live secured manager, its route table, its secrets.

One manager per module (``secured`` fixture): the real runtime (embedded Redis, SQLite, the
controller loop, uvicorn on a free port) with no agents (every pool has ``max_nodes: 0``), its
admin token seeded from ``RM_ADMIN_TOKEN`` as an operator would, plus two users and a viewer.
"""

from __future__ import annotations

import itertools
import re
import subprocess
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi.routing import iter_route_contexts

from rm.api.app import create_app
from rm.auth import ADMIN_TOKEN_ENV, Role, create_token
from rm.config import parse_config
from rm.runtime import Runtime
from tests.helpers import wait_until

CLUSTER = "sectest"


@dataclass(frozen=True)
class Secured:
    rt: Runtime
    url: str
    tokens: dict[str, str]  # admin (from RM_ADMIN_TOKEN), alice and bob (users), vera (viewer)
    extra_secrets: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str) -> dict[str, str]:
        return bearer(self.tokens[who])


_sources = itertools.count(20)


def loopback_client(url: str, **options: Any) -> httpx.Client:
    """A client sending from a loopback address of its own (127.0.0.20, .21, ...): the enrolment
    throttle counts refusals per client address, so tests do not share a budget."""
    source = f"127.0.0.{next(_sources) % 230 + 20}"
    return httpx.Client(base_url=url, timeout=30, transport=httpx.HTTPTransport(local_address=source), **options)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def secured_config(tmp: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "cluster": CLUSTER, "database": f"sqlite:///{tmp}/rm.db", "broker": "embedded", "state_dir": str(tmp),
        "api": {"host": "127.0.0.1", "port": 0}, "policy": {"tick_s": 0.5},
        "pools": [{"name": "onprem", "provider": "local", "priority": 0, "slots": 2, "min_nodes": 0, "max_nodes": 0}],
        **overrides,
    }


def start_secured(tmp: Path, **overrides: Any) -> Iterator[Secured]:
    """A generator for a module fixture: start, yield, always stop."""
    admin = secrets.token_urlsafe(32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ADMIN_TOKEN_ENV, admin)
        rt = Runtime(parse_config(secured_config(tmp, **overrides)))
        try:
            rt.start()
            url = rt.serve_api()
        except BaseException:
            abandon(rt)
            raise
    try:
        now = time.time()
        tokens = {"admin": admin, **{name: create_token(rt.store, name, role, now)
                                     for name, role in (("alice", Role.USER), ("bob", Role.USER), ("vera", Role.VIEWER))}}
        yield Secured(rt, url, tokens)
    finally:
        rt.stop()


def abandon(rt: Runtime) -> None:
    """Stop what a failed start left running."""
    if getattr(rt, "controller", None) is not None:
        rt.stop()
    elif rt.embedded is not None:
        rt.embedded.stop()


def route_table(app: Any) -> list[tuple[str, str]]:
    """(method, path) of every route the app serves, included routers and hidden routes too."""
    found = set()
    for context in iter_route_contexts(app.router.routes):
        for method in context.methods or ():
            if method not in ("HEAD", "OPTIONS"):
                found.add((method, context.path))
    return sorted(found)


def served_routes(secured: Secured) -> list[tuple[str, str]]:
    return route_table(create_app(secured.rt))


def fill(path: str, values: dict[str, str] | None = None) -> str:
    """A concrete path: each ``{param}`` from ``values`` or ``nope``."""
    return re.sub(r"\{([^}]+)\}", lambda m: (values or {}).get(m[1], "nope"), path)


def submit(client: httpx.Client, token: str, name: str = "one") -> str:
    body = {"name": name, "tasks": [{"name": "a", "run": "builtin.sleep", "args": {"seconds": 0.1}}]}
    response = client.post("/api/v1/jobs", headers=bearer(token), json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def leaks(text: str, secrets_by_label: dict[str, str]) -> list[str]:
    """Labels of the secrets found in ``text``."""
    return [label for label, secret in secrets_by_label.items() if secret and secret in text]


def collect_get_responses(secured: Secured, values: dict[str, str]) -> dict[str, str]:
    """``"GET <path> as <who>" -> body`` for every GET route of the app (path parameters from
    ``values``) and every token, plus the docs and a few filtered listings."""
    paths = {fill(path, values) for method, path in served_routes(secured) if method == "GET"}
    paths |= {"/api/v1/nodes?all=true", "/api/v1/events?limit=2000", "/api/v1/jobs?limit=500",
              "/api/v1/costs?group_by=job", "/api/v1/costs?format=csv&group_by=owner"}
    bodies = {}
    with httpx.Client(base_url=secured.url, timeout=30) as client:
        for path in sorted(paths):
            for who, token in secured.tokens.items():
                bodies[f"GET {path} as {who}"] = client.get(path, headers=bearer(token)).text
    return bodies


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=2).ping())
    except redis.ConnectionError:
        return False


@contextmanager
def redis_server(argv: list[str], url: str, what: str) -> Iterator[str]:
    """Run ``argv`` (a redis-server command line) until ``url`` answers; yield the URL; stop it."""
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: redis_answers(url), f"{what} to answer", timeout_s=30)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def bootstrap_tokens_in(user_data: str) -> list[str]:
    """The one-time tokens in a VM's cloud-init (the JSON bootstrap file it carries)."""
    return re.findall(r'\\?"token\\?":\s*\\?"([A-Za-z0-9_\-]{20,})', user_data)
