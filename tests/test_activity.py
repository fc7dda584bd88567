"""The activity tracker: hand-made Celery-shaped events, then one real agent and a real event receiver."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from agents.app import make_app
from agents.settings import AgentSettings
from rm.activity import STALE_AFTER_HEARTBEAT_S, ActivityTracker, TaskUpdate
from rm.demand import queue_for
from rm.monitor import EventMonitor
from tests.helpers import redis_client, redis_url, spawn_agent, wait_until  # noqa: F401 - fixtures

W1 = "n-1@demo"
W2 = "n-2@demo"
Q_ANY = "rm.demo"
Q_GPU = "rm.demo.gpu"
T0 = 1_000_000.0


# Events shaped like the ones celery.events delivers (the fields the tracker may read, plus noise).
def worker_event(kind: str, hostname: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"type": f"worker-{kind}", "hostname": hostname, "timestamp": at, "utcoffset": 0, "pid": 4242,
            "clock": 1, "freq": 2.0, "sw_ident": "py-celery", "sw_ver": "5.7.0", "sw_sys": "Linux", **extra}


def heartbeat(hostname: str, at: float, active: int) -> dict[str, Any]:
    return worker_event("heartbeat", hostname, at, active=active, processed=0, loadavg=[0.0, 0.0, 0.0])


def task_sent(uuid: str, queue: str, at: float) -> dict[str, Any]:
    # task-sent comes from the publisher: its hostname is the manager's, not a worker's
    return {"type": "task-sent", "uuid": uuid, "hostname": "gen1@manager", "timestamp": at, "name": "builtin.sleep",
            "args": "()", "kwargs": "{'seconds': 1}", "retries": 0, "eta": None, "expires": None,
            "queue": queue, "exchange": "", "routing_key": queue, "root_id": uuid, "parent_id": None}


def task_event(kind: str, uuid: str, hostname: str, at: float, **extra: Any) -> dict[str, Any]:
    return {"type": f"task-{kind}", "uuid": uuid, "hostname": hostname, "timestamp": at, "pid": 4242,
            "clock": 2, **extra}


def apply_all(tracker: ActivityTracker, events: list[tuple[float, dict[str, Any]]]) -> list[TaskUpdate | None]:
    return [tracker.apply(event, at) for at, event in events]


# -- pure folding --------------------------------------------------------------------------------
def test_received_started_succeeded_lifecycle() -> None:
    tracker = ActivityTracker()
    tracker.apply(worker_event("online", W1, T0), T0)
    assert tracker.apply(task_sent("t1", Q_ANY, T0), T0) is None
    assert tracker.in_flight_by_queue() == {}  # sent is waiting in the broker, not in flight

    update = tracker.apply(task_event("received", "t1", W1, T0 + 1), T0 + 1)
    assert update == TaskUpdate(task_id="t1", kind="received", worker=W1, at=T0 + 1)
    assert tracker.workers[W1].tasks == {"t1": ("received", T0 + 1)}
    assert tracker.in_flight_by_queue() == {Q_ANY: 1}

    update = tracker.apply(task_event("started", "t1", W1, T0 + 2), T0 + 2)
    assert update is not None and update.kind == "started"
    assert tracker.workers[W1].tasks == {"t1": ("started", T0 + 2)}
    assert tracker.workers[W1].running == 1
    assert tracker.in_flight_by_queue() == {Q_ANY: 1}

    update = tracker.apply(task_event("succeeded", "t1", W1, T0 + 3, result="{'slept': 1.0}", runtime=1.0), T0 + 3)
    assert update is not None and update.kind == "succeeded" and update.worker == W1
    assert tracker.workers[W1].tasks == {}
    assert tracker.workers[W1].running == 0
    assert tracker.in_flight_by_queue() == {}


@pytest.mark.parametrize("kind", ["failed", "rejected", "revoked", "retried"])
def test_every_terminal_event_ends_the_task(kind: str) -> None:
    tracker = ActivityTracker()
    apply_all(tracker, [(T0, task_sent("t1", Q_ANY, T0)), (T0, task_event("received", "t1", W1, T0)),
                        (T0, task_event("started", "t1", W1, T0))])
    assert tracker.in_flight_by_queue() == {Q_ANY: 1}
    update = tracker.apply(task_event(kind, "t1", W1, T0 + 1, exception="ValueError('boom')"), T0 + 1)
    assert update is not None and update.kind == kind and update.detail == "ValueError('boom')"
    assert tracker.in_flight_by_queue() == {}


def test_failure_reason_is_carried_in_the_update() -> None:
    tracker = ActivityTracker()
    update = tracker.apply(task_event("rejected", "t9", W1, T0, reason="worker lost"), T0)
    assert update is not None and update.detail == "worker lost"


def test_in_flight_is_counted_per_queue_across_workers() -> None:
    tracker = ActivityTracker()
    events = [
        (T0, task_sent("a1", Q_ANY, T0)), (T0, task_sent("a2", Q_ANY, T0)), (T0, task_sent("g1", Q_GPU, T0)),
        (T0, task_sent("g2", Q_GPU, T0)), (T0, task_sent("g3", Q_GPU, T0)),
        (T0 + 1, task_event("received", "a1", W1, T0 + 1)),
        (T0 + 1, task_event("started", "a1", W1, T0 + 1)),
        (T0 + 1, task_event("received", "a2", W2, T0 + 1)),
        (T0 + 1, task_event("received", "g1", W2, T0 + 1)),
        (T0 + 1, task_event("started", "g1", W2, T0 + 1)),
        (T0 + 1, task_event("received", "g2", W1, T0 + 1)),
        # g3 still waits in the broker; "x1" was sent before we listened (no task-sent seen)
        (T0 + 1, task_event("received", "x1", W1, T0 + 1)),
    ]
    apply_all(tracker, events)
    assert tracker.in_flight_by_queue() == {Q_ANY: 2, Q_GPU: 2, "": 1}
    tracker.apply(task_event("succeeded", "g1", W2, T0 + 2), T0 + 2)
    assert tracker.in_flight_by_queue() == {Q_ANY: 2, Q_GPU: 1, "": 1}
    assert tracker.queue_of["g3"] == Q_GPU


def test_routing_key_stands_in_for_a_missing_queue() -> None:
    tracker = ActivityTracker()
    event = task_sent("t1", Q_GPU, T0)
    del event["queue"]
    tracker.apply(event, T0)
    tracker.apply(task_event("received", "t1", W1, T0), T0)
    assert tracker.in_flight_by_queue() == {Q_GPU: 1}


def test_offline_clears_the_worker_and_its_tasks() -> None:
    tracker = ActivityTracker()
    apply_all(tracker, [
        (T0, worker_event("online", W1, T0)), (T0, worker_event("online", W2, T0)),
        (T0, task_sent("t1", Q_ANY, T0)), (T0, task_sent("t2", Q_ANY, T0)),
        (T0, task_event("started", "t1", W1, T0)), (T0, task_event("received", "t2", W2, T0)),
        (T0, heartbeat(W1, T0, active=1)),
    ])
    assert tracker.in_flight_by_queue() == {Q_ANY: 2}
    tracker.apply(worker_event("offline", W1, T0 + 1), T0 + 1)
    w1 = tracker.workers[W1]
    assert not w1.online and w1.tasks == {} and w1.heartbeat_active == 0 and w1.running == 0
    assert not tracker.alive(W1, T0 + 1, timeout_s=60)
    assert tracker.alive(W2, T0 + 1, timeout_s=60)
    assert tracker.in_flight_by_queue() == {Q_ANY: 1}


def test_idle_heartbeat_drops_only_stale_started_tasks() -> None:
    tracker = ActivityTracker()
    hb_at = T0 + 10
    stale_at = hb_at - STALE_AFTER_HEARTBEAT_S - 0.5  # its end event was missed
    fresh_at = hb_at - STALE_AFTER_HEARTBEAT_S + 0.5  # may simply have started after the heartbeat was sent
    apply_all(tracker, [
        (T0, task_sent("stale", Q_ANY, T0)), (T0, task_sent("fresh", Q_ANY, T0)), (T0, task_sent("held", Q_ANY, T0)),
        (stale_at, task_event("started", "stale", W1, stale_at)),
        (fresh_at, task_event("started", "fresh", W1, fresh_at)),
        (stale_at, task_event("received", "held", W1, stale_at)),  # reserved, not running: not in "active"
    ])
    assert tracker.in_flight_by_queue() == {Q_ANY: 3}
    tracker.apply(heartbeat(W1, hb_at, active=0), hb_at)
    assert set(tracker.workers[W1].tasks) == {"fresh", "held"}
    assert tracker.in_flight_by_queue() == {Q_ANY: 2}


def test_busy_heartbeat_keeps_old_started_tasks_and_counts_the_larger() -> None:
    tracker = ActivityTracker()
    apply_all(tracker, [(T0, task_event("started", "t1", W1, T0))])
    hb_at = T0 + 10 * STALE_AFTER_HEARTBEAT_S
    tracker.apply(heartbeat(W1, hb_at, active=3), hb_at)
    worker = tracker.workers[W1]
    assert set(worker.tasks) == {"t1"}
    assert worker.heartbeat_active == 3
    assert worker.running == 3  # the heartbeat knows of tasks whose events we missed


def test_alive_follows_the_last_event_and_the_timeout() -> None:
    tracker = ActivityTracker()
    assert not tracker.alive(W1, T0, timeout_s=10)  # never seen
    tracker.apply(worker_event("online", W1, T0), T0)
    assert tracker.alive(W1, T0 + 10, timeout_s=10)
    assert not tracker.alive(W1, T0 + 10.5, timeout_s=10)
    tracker.apply(heartbeat(W1, T0 + 10.5, active=0), T0 + 10.5)
    assert tracker.alive(W1, T0 + 20, timeout_s=10)
    tracker.apply(task_event("received", "t1", W1, T0 + 25), T0 + 25)  # task events prove life too
    assert tracker.alive(W1, T0 + 30, timeout_s=10)
    assert tracker.workers[W1].first_seen == T0


def test_forget_drops_a_task_everywhere() -> None:
    tracker = ActivityTracker()
    apply_all(tracker, [
        (T0, task_sent("t1", Q_ANY, T0)), (T0, task_sent("t2", Q_GPU, T0)),
        (T0, task_event("started", "t1", W1, T0)),
        (T0, task_event("received", "t1", W2, T0)),  # redelivered to another worker
        (T0, task_event("started", "t2", W2, T0)),
    ])
    assert tracker.in_flight_by_queue() == {Q_ANY: 2, Q_GPU: 1}
    tracker.forget("t1")
    assert "t1" not in tracker.queue_of
    assert all("t1" not in w.tasks for w in tracker.workers.values())
    assert tracker.in_flight_by_queue() == {Q_GPU: 1}
    tracker.forget("never-seen")  # harmless
    tracker.forget_worker(W2)
    assert W2 not in tracker.workers and tracker.in_flight_by_queue() == {}


def test_malformed_and_foreign_events_are_ignored() -> None:
    tracker = ActivityTracker()
    assert tracker.apply({"type": "task-received", "hostname": W1}, T0) is None  # no uuid
    assert tracker.apply({"type": "worker-heartbeat"}, T0) is None  # no hostname
    assert tracker.apply({"type": "something-else", "hostname": W1, "uuid": "x"}, T0) is None
    assert tracker.apply({}, T0) is None
    assert tracker.workers == {} and tracker.queue_of == {}


# -- a real agent and a real event receiver ------------------------------------------------------
class Pump:
    """Feeds every received event to the tracker one at a time, remembering the peak in-flight count."""

    def __init__(self, monitor: EventMonitor, tracker: ActivityTracker, queue: str) -> None:
        self.monitor, self.tracker, self.queue = monitor, tracker, queue
        self.updates: list[TaskUpdate] = []
        self.kinds: list[str] = []
        self.peak = 0

    def __call__(self) -> None:
        for at, event in self.monitor.drain():
            self.kinds.append(event.get("type", ""))
            update = self.tracker.apply(event, at)
            if update is not None:
                self.updates.append(update)
            self.peak = max(self.peak, self.tracker.in_flight_by_queue().get(self.queue, 0))

    def until(self, condition: Callable[[], bool], message: str) -> None:
        def _check() -> bool:
            self()
            return condition()

        wait_until(_check, lambda: f"{message}; event types seen: {self.kinds}")


def test_real_agent_events_drive_the_tracker(
    redis_url: str, redis_client: redis.Redis, spawn_agent: Callable,  # noqa: F811
) -> None:
    queue = queue_for("acttest", {"onprem"})
    app = make_app(redis_url)
    monitor = EventMonitor(app)
    monitor.start()
    try:
        tracker = ActivityTracker()
        pump = Pump(monitor, tracker, queue)
        wait_until(monitor.connected.is_set, "the event receiver never connected")
        settings = AgentSettings(node_id="act-1", pool="onprem", cluster="acttest", broker_url=redis_url,
                                 queues=(queue_for("acttest", ()), queue), slots=2)
        agent = spawn_agent(settings)
        name = settings.worker_name
        # a heartbeat proves the receiver is subscribed before we publish (events are pub/sub)
        pump.until(lambda: "worker-heartbeat" in pump.kinds, f"no heartbeat from {name}")
        assert tracker.alive(name, time.time(), timeout_s=10)
        assert tracker.in_flight_by_queue() == {}

        results = [app.send_task("builtin.sleep", kwargs={"seconds": 3}, queue=queue) for _ in range(2)]
        ids = {r.id for r in results}
        for task_id in ids:  # the publisher records each task's queue, as the job service does
            tracker.queue_of[task_id] = queue

        pump.until(lambda: pump.peak == 2, f"the two tasks were never in flight together on {queue}")
        pump.until(lambda: all(r.state == "SUCCESS" for r in results), "the tasks never succeeded")
        pump.until(lambda: tracker.in_flight_by_queue() == {}, "tasks stayed in flight after they succeeded")
        assert tracker.workers[name].tasks == {}
        assert tracker.alive(name, time.time(), timeout_s=10)
        for task_id in ids:
            kinds = [u.kind for u in pump.updates if u.task_id == task_id]
            assert kinds == ["received", "started", "succeeded"], (task_id, kinds)
            assert {u.worker for u in pump.updates if u.task_id == task_id} == {name}

        agent.stop()  # warm shutdown announces worker-offline
        pump.until(lambda: not tracker.alive(name, time.time(), timeout_s=10),
                   f"{name} still alive after its shutdown")
        assert not tracker.workers[name].online
    finally:
        monitor.stop()
        app.close()


def test_event_monitor_can_be_stopped_and_joined(redis_url: str) -> None:  # noqa: F811
    """Regression: a ``_stop`` attribute shadowing ``Thread._stop`` made join()/is_alive() raise TypeError."""
    app = make_app(redis_url)
    monitor = EventMonitor(app)
    monitor.start()
    try:
        wait_until(monitor.connected.is_set, "the event receiver never connected")
    finally:
        monitor.stop()
        app.close()
    monitor.join(timeout=30)
    assert not monitor.is_alive()
