"""A broker outage, unit by unit: the broker restarts on its port with its data, the event monitor
says when it stops and starts hearing it (warning once per outage), and an agent's silence
counts only while the broker is heard, with a grace after an outage for agents to reconnect.

The chaos suite (``tests/test_chaos.py``) checks the whole system across a real outage; these
tests pin each part's rule so a regression names the part.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from agents.app import make_app
from rm.broker import EmbeddedRedis, free_port
from rm.monitor import RECONNECT_DELAY_S, EventMonitor, Hearing
from rm.nodes import OUTAGE_GRACE_S, silence_counts_from
from tests.helpers import wait_until

TIMEOUT_S = 10.0


def test_silence_does_not_count_while_the_broker_is_unheard() -> None:
    assert silence_counts_from(100.0, Hearing(since=None), TIMEOUT_S) is None
    assert silence_counts_from(100.0, Hearing(since=None, resumed_at=150.0), TIMEOUT_S) is None


def test_silence_counts_from_the_start_or_since_the_broker_is_heard() -> None:
    assert silence_counts_from(100.0, Hearing(since=90.0), TIMEOUT_S) == 100.0
    assert silence_counts_from(100.0, Hearing(since=104.0), TIMEOUT_S) == 104.0


def test_after_an_outage_agents_have_the_grace_to_reconnect() -> None:
    counts_from = silence_counts_from(100.0, Hearing(since=200.0, resumed_at=200.0), TIMEOUT_S)
    # a node is lost at the earliest OUTAGE_GRACE_S after the broker is back, never sooner
    assert counts_from + TIMEOUT_S == 200.0 + OUTAGE_GRACE_S
    # a grace shorter than the heartbeat timeout never makes detection faster than usual
    assert silence_counts_from(100.0, Hearing(since=200.0, resumed_at=200.0), 60.0) == 200.0


def test_a_restarted_broker_keeps_its_port_and_its_data(tmp_path: Path) -> None:
    port = free_port()
    server = EmbeddedRedis(tmp_path, port=port)
    assert server.start() == f"redis://127.0.0.1:{port}/0"
    try:
        redis.Redis(port=port).rpush("queue", b"message")
        server.stop()
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=port, socket_connect_timeout=1).ping()
        assert server.start() == f"redis://127.0.0.1:{port}/0"
        assert redis.Redis(port=port).lrange("queue", 0, -1) == [b"message"], "the append-only file was not replayed"
    finally:
        server.stop()


def test_the_monitor_says_when_it_hears_the_broker_and_warns_once_per_outage(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = EmbeddedRedis(tmp_path, port=free_port())
    app = make_app(server.start())
    monitor = EventMonitor(app)
    monitor.start()
    try:
        wait_until(lambda: monitor.hearing().since, "the monitor never heard the broker")
        assert monitor.hearing().resumed_at is None
        with caplog.at_level(logging.WARNING, logger="rm.monitor"):
            server.stop()
            wait_until(lambda: monitor.hearing().since is None, "the monitor did not notice the outage")
            time.sleep(3 * RECONNECT_DELAY_S)  # several reconnection attempts fail meanwhile
            assert monitor.hearing().since is None
            server.start()
            heard = wait_until(lambda: (h := monitor.hearing()).since and h, "the monitor never heard it again")
        assert heard.resumed_at == heard.since
        messages = [r.getMessage() for r in caplog.records]
        assert len([m for m in messages if "lost the broker" in m]) == 1, messages
        assert len([m for m in messages if "hears the broker again" in m]) == 1, messages
    finally:
        monitor.stop()
        app.close()
        server.stop()
