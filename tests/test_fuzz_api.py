"""Schemathesis over the served OpenAPI spec: no generated request gets a 5xx.

Why Hypothesis strategies driven by hand rather than schemathesis's pytest plugin: the plugin
does not follow pytest 9; ``operation.as_strategy()`` is the same generator. Every operation of
the spec gets a bounded number of examples (``EXAMPLES``), derandomized so a run is repeatable,
sent over real HTTP with an admin token (so the requests reach the handlers, not only the
auth check) to a live manager on PostgreSQL (the stricter database: it refuses NUL characters
and out-of-range integers that SQLite would swallow).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.security_support import Secured, bearer, start_secured

pytestmark = [pytest.mark.timeout(600), pytest.mark.postgres]

EXAMPLES = 20


@pytest.fixture
def secured(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Iterator[Secured]:
    yield from start_secured(tmp_path_factory.mktemp("fuzz"), database=postgres_url)


def _server_errors(operation, url: str, headers: dict[str, str], statuses: Counter) -> list[str]:  # noqa: ANN001 - a schemathesis APIOperation
    found: list[str] = []

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def probe(case) -> None:  # noqa: ANN001 - a schemathesis Case
        response = case.call(base_url=url, headers=headers, timeout=30)
        statuses[response.status_code] += 1
        if response.status_code >= 500:
            found.append(f"{case.method} {case.formatted_path} query={case.query!r} -> {response.status_code}: "
                         f"{response.text[:200]}")

    probe()
    return found


def test_no_generated_request_gets_a_5xx(secured: Secured) -> None:
    headers = bearer(secured.tokens["admin"])
    spec = httpx.get(f"{secured.url}/openapi.json", headers=headers).json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20, [f"{o.method} {o.path}" for o in operations]
    statuses: Counter = Counter()
    errors = [error for operation in operations for error in _server_errors(operation, secured.url, headers, statuses)]
    assert not errors, "\n".join(errors[:20])
    # the run reached the handlers: successes and validation refusals, not only one kind of answer
    assert sum(statuses.values()) >= 5 * len(operations) and statuses[200] and statuses[422], statuses
    assert httpx.get(f"{secured.url}/healthz").status_code == 200
