"""How long a pool waits after a failed launch, by the class of the failure."""

from __future__ import annotations

import pytest

from providers.base import LaunchErrorKind, classify_http_status
from rm.nodes import BACKOFF_FIRST_S, BACKOFF_MAX_S, LaunchBackoff, backoff_sentence

K = LaunchErrorKind


@pytest.mark.parametrize("kind", [K.QUOTA, K.CAPACITY, K.TRANSIENT, None])
def test_retryable_failures_double_from_the_first_delay(kind: K | None) -> None:
    backoff = LaunchBackoff()
    delays = [backoff.failed(100.0 * i, kind) for i in range(1, 9)]
    assert delays[:4] == [BACKOFF_FIRST_S, 2 * BACKOFF_FIRST_S, 4 * BACKOFF_FIRST_S, 8 * BACKOFF_FIRST_S]
    assert max(delays) == BACKOFF_MAX_S and delays[-1] == BACKOFF_MAX_S


@pytest.mark.parametrize("kind", [K.AUTH, K.CONFIG])
def test_failures_only_an_admin_can_fix_wait_the_longest_at_once(kind: K) -> None:
    backoff = LaunchBackoff()
    assert backoff.failed(0.0, kind) == BACKOFF_MAX_S
    assert "an admin must fix" in backoff_sentence("burst", kind, BACKOFF_MAX_S)
    assert "admin" not in backoff_sentence("burst", K.QUOTA, 5.0)


def test_throttling_waits_at_least_the_clouds_retry_after() -> None:
    backoff = LaunchBackoff()
    assert backoff.failed(0.0, K.THROTTLED, retry_after_s=42.0) == 42.0
    assert backoff.failed(1.0, K.THROTTLED, retry_after_s=1.0) == 41.0, "a later, shorter failure never shortens the wait"
    assert LaunchBackoff().failed(0.0, K.THROTTLED, retry_after_s=9999.0) == BACKOFF_MAX_S


@pytest.mark.parametrize(("status", "kind"), [
    (None, K.TRANSIENT), (429, K.THROTTLED), (401, K.AUTH), (403, K.AUTH), (409, K.QUOTA),
    (400, K.CONFIG), (404, K.CONFIG), (500, K.TRANSIENT), (503, K.TRANSIENT),
])
def test_http_status_fallback_classes(status: int | None, kind: K) -> None:
    assert classify_http_status(status) == kind


def test_a_long_outage_never_overflows_the_delay() -> None:
    """The simulator fails a pool thousands of times in a row; 2 ** n must not reach a float overflow."""
    backoff = LaunchBackoff()
    delays = [backoff.failed(float(i), K.CAPACITY) for i in range(5000)]
    assert delays[-1] == BACKOFF_MAX_S
