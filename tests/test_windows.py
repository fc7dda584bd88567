"""Bursting windows: when a window is open (cron + duration in a time zone), how they are
validated, and what the pure policy does with a pool whose windows are closed."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from policies.decision import Cause
from policies.load_factor import decide
from policies.snapshot import Demand, NodeView, PoolView, Snapshot
from rm.config import ConfigError, parse_config
from rm.windows import WindowConfig, window_open

PARIS = ZoneInfo("Europe/Paris")
OFFICE = WindowConfig(cron="0 8 * * 1-5", duration_s=11 * 3600, timezone="Europe/Paris")  # weekdays 08:00-19:00
SETTINGS = SimpleNamespace(load_factor=1.0, idle_timeout_s=60.0, scale_down_ticks=3, max_launch_per_tick=10,
                           budget_guard_s=60.0)


def paris(*args: int) -> float:
    return datetime(*args, tzinfo=PARIS).timestamp()


@pytest.mark.parametrize(("moment", "expected"), [
    ((2026, 3, 2, 8, 0, 0), True),  # Monday, the opening minute itself
    ((2026, 3, 2, 7, 59, 59), False),
    ((2026, 3, 2, 18, 59, 59), True),
    ((2026, 3, 2, 19, 0, 0), False),  # duration elapsed
    ((2026, 3, 7, 10, 0, 0), False),  # Saturday
    ((2026, 3, 30, 9, 0, 0), True),  # the Monday after the switch to summer time: still 09:00 Paris
])
def test_a_window_is_open_from_each_cron_opening_for_its_duration_in_its_time_zone(moment, expected) -> None:
    assert OFFICE.open_at(paris(*moment)) is expected
    assert window_open([OFFICE], paris(*moment)) is expected


def test_the_same_window_read_in_utc_is_an_hour_apart_in_winter() -> None:
    utc = WindowConfig(cron=OFFICE.cron, duration_s=OFFICE.duration_s)  # timezone defaults to UTC
    at = paris(2026, 3, 2, 8, 30)  # 07:30 UTC
    assert OFFICE.open_at(at) and not utc.open_at(at)


def test_no_window_means_always_open_and_any_open_window_opens_the_pool() -> None:
    night = WindowConfig(cron="0 22 * * *", duration_s=3600, timezone="Europe/Paris")
    assert window_open([], 0.0)
    assert window_open([OFFICE, night], paris(2026, 3, 7, 22, 30))  # Saturday night: the second one
    assert not window_open([OFFICE, night], paris(2026, 3, 7, 21, 30))


def test_bad_windows_are_refused_naming_each_field() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"cluster": "c", "pools": [{"name": "p", "provider": "local", "windows": [
            {"cron": "0 25 * * *", "duration_s": 0, "timezone": "Mars/Olympus"}, {"cron": "@daily", "duration_s": 60}]}]})
    text = str(error.value)
    for where in ("pools[0].windows[0].cron", "pools[0].windows[0].duration_s", "pools[0].windows[0].timezone",
                  "pools[0].windows[1].cron"):
        assert where in text, text


def pools(window_open: bool, burst_nodes: tuple[NodeView, ...] = ()) -> tuple[PoolView, ...]:
    return (
        PoolView("onprem", priority=0, slots=2, min_nodes=1, max_nodes=1, nodes=(NodeView("o1", "onprem", "busy", 2),)),
        PoolView("cheap", priority=5, slots=2, min_nodes=1, max_nodes=4, nodes=burst_nodes, window_open=window_open),
        PoolView("dear", priority=9, slots=2, min_nodes=0, max_nodes=4),
    )


def test_outside_its_window_a_pool_launches_nothing_and_its_demand_falls_to_the_next_pool() -> None:
    snapshot = Snapshot(pools=pools(window_open=False), demand=(Demand(frozenset(), waiting=8, in_flight=2),))
    decision = decide(snapshot, SETTINGS, now=1000.0)
    assert [(launch.pool, launch.count) for launch in decision.launches] == [("dear", 4)]
    causes = {(r.pool, r.cause) for r in decision.refusals}
    assert ("cheap", Cause.WINDOW) in causes
    fall = next(r for r in decision.refusals if r.pool == "cheap" and "fall through" in r.message)
    assert fall.unmet_slots == 8 and "outside its bursting windows" in fall.message
    assert any(r.pool == "cheap" and "min_nodes 1" in r.message for r in decision.refusals), "min_nodes is not launched"

    opened = decide(replace(snapshot, pools=pools(window_open=True)), SETTINGS, now=1000.0)
    assert [(launch.pool, launch.count) for launch in opened.launches] == [("cheap", 4)]


def test_outside_its_window_idle_nodes_are_released_at_once_and_busy_ones_keep_their_tasks() -> None:
    nodes = (NodeView("c-idle", "cheap", "idle", 0, idle_since=999.0), NodeView("c-busy", "cheap", "busy", 2))
    snapshot = Snapshot(pools=pools(window_open=False, burst_nodes=nodes), demand=(Demand(frozenset(), 0, in_flight=4),))
    decision = decide(snapshot, SETTINGS, now=1000.0)
    assert [(d.node_id, d.cause) for d in decision.drains] == [("c-idle", Cause.WINDOW)]
    assert decision.launches == (), "the busy node's in-flight tasks stay on it; nothing falls to 'dear'"
    assert "outside its bursting windows" in decision.drains[0].message
