"""The Spot preemption watcher against a loopback fake of Azure's IMDS scheduled-events endpoint."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from agents.scheduled_events import DEFAULT_URL, PreemptionWatcher
from tests.fakes.server import serve

NODE = "burst-a1b2c3"
WAIT_S = 20  # generous upper bound for an event that must happen; never a performance limit


class FakeImds:
    """``/metadata/scheduledevents``: GET lists events, POST takes StartRequests; needs ``Metadata: true``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[dict] = []
        self.incarnation = 1
        self.gets = 0
        self.acks: list[dict] = []
        self.failures_left = 0  # the next N GETs answer 500
        self.garbage_left = 0  # the next N GETs answer a non-JSON body
        self.polled = threading.Condition(self.lock)

    def add(self, event_type: str, resources: list[str], status: str = "Scheduled") -> str:
        with self.lock:
            event_id = f"evt-{len(self.events) + 1}"
            self.events.append({
                "EventId": event_id, "EventType": event_type, "ResourceType": "VirtualMachine",
                "Resources": resources, "EventStatus": status, "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
                "Description": "", "EventSource": "Platform", "DurationInSeconds": -1,
            })
            self.incarnation += 1
            return event_id

    def wait_gets(self, count: int) -> None:
        """Block until the watcher has polled ``count`` more times."""
        with self.polled:
            target = self.gets + count
            assert self.polled.wait_for(lambda: self.gets >= target, timeout=WAIT_S), "the watcher stopped polling"

    def __call__(self, environ: dict, start_response) -> list[bytes]:
        if environ.get("HTTP_METADATA") != "true" or environ.get("PATH_INFO") != "/metadata/scheduledevents":
            return self._answer(start_response, "400 Bad Request",
                                {"error": "Bad request. Required metadata header not specified"})
        if "api-version=2020-07-01" not in environ.get("QUERY_STRING", ""):
            return self._answer(start_response, "400 Bad Request", {"error": "Bad request. api-version is invalid"})
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length))
            with self.lock:
                self.acks.append(body)
            return self._answer(start_response, "200 OK", None)
        with self.polled:
            self.gets += 1
            self.polled.notify_all()
            if self.failures_left:
                self.failures_left -= 1
                return self._answer(start_response, "500 Internal Server Error", {"error": "Internal error"})
            if self.garbage_left:
                self.garbage_left -= 1
                start_response("200 OK", [("Content-Type", "text/html")])
                return [b"<html>not json</html>"]
            document = {"DocumentIncarnation": self.incarnation, "Events": [dict(e) for e in self.events]}
        return self._answer(start_response, "200 OK", document)

    @staticmethod
    def _answer(start_response, status: str, payload: dict | None) -> list[bytes]:
        data = b"" if payload is None else json.dumps(payload).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]


@contextmanager
def watching(imds: FakeImds, calls: list[dict]) -> Iterator[PreemptionWatcher]:
    with serve(imds) as served:
        url = f"{served.base_url}/metadata/scheduledevents?api-version=2020-07-01"
        watcher = PreemptionWatcher(NODE, calls.append, url=url, interval_s=0.02, timeout_s=2.0)
        watcher.start()
        try:
            yield watcher
        finally:
            watcher.stop()
            watcher.join(timeout=WAIT_S)
            assert not watcher.is_alive()


def test_default_url_is_the_imds_scheduled_events_endpoint() -> None:
    assert DEFAULT_URL == "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"


def test_ignores_other_vms_and_other_event_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # IMDS must never go through a proxy
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.delenv("no_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    imds = FakeImds()
    imds.add("Preempt", ["burst-other"])
    imds.add("Freeze", [NODE])
    imds.add("Reboot", [NODE])
    imds.add("Redeploy", [NODE, "burst-other"])
    calls: list[dict] = []
    with watching(imds, calls) as watcher:
        imds.wait_gets(5)
        assert calls == []
        assert not watcher.fired.is_set()
    assert imds.acks == []


def test_preempt_of_this_vm_calls_back_once_and_acknowledges() -> None:
    imds = FakeImds()
    imds.add("Freeze", [NODE])
    calls: list[dict] = []
    with watching(imds, calls) as watcher:
        imds.wait_gets(2)
        first = imds.add("Preempt", ["burst-other", NODE.upper()])  # VM names are case-insensitive
        assert watcher.fired.wait(WAIT_S)
        second = imds.add("Preempt", [NODE])  # a later notice for the same VM: acked, no second callback
        imds.wait_gets(5)  # the events stay listed: no repeat of the callback or the ack
    assert [call["EventId"] for call in calls] == [first]
    assert calls[0]["EventType"] == "Preempt"
    assert imds.acks == [{"StartRequests": [{"EventId": first}]}, {"StartRequests": [{"EventId": second}]}]


def test_started_event_calls_back_without_an_ack() -> None:
    imds = FakeImds()
    imds.add("Preempt", [NODE], status="Started")
    calls: list[dict] = []
    with watching(imds, calls) as watcher:
        assert watcher.fired.wait(WAIT_S)
        imds.wait_gets(3)
    assert len(calls) == 1
    assert imds.acks == []


def test_tolerates_errors_and_garbage_then_still_sees_the_eviction() -> None:
    imds = FakeImds()
    imds.failures_left = 3
    imds.garbage_left = 2
    imds.add("Preempt", [NODE])
    calls: list[dict] = []
    with watching(imds, calls) as watcher:
        assert watcher.fired.wait(WAIT_S)
    assert imds.gets >= 6
    assert len(calls) == 1 and len(imds.acks) == 1


def test_unreachable_imds_is_tolerated_and_a_failing_callback_still_acks() -> None:
    # Nothing listens on the port: every poll fails and the thread keeps going.
    with serve(FakeImds()) as served:
        dead_url = f"{served.base_url}/metadata/scheduledevents?api-version=2020-07-01"
    watcher = PreemptionWatcher(NODE, lambda event: None, url=dead_url, interval_s=0.01, timeout_s=0.5)
    watcher.poll_once()
    watcher.poll_once()
    assert not watcher.fired.is_set()

    imds = FakeImds()
    imds.add("Preempt", [NODE])

    def explode(event: dict) -> None:
        raise RuntimeError("celery is already gone")

    with serve(imds) as served:
        url = f"{served.base_url}/metadata/scheduledevents?api-version=2020-07-01"
        failing = PreemptionWatcher(NODE, explode, url=url)
        failing.poll_once()
        failing.poll_once()
    assert failing.fired.is_set()
    assert len(imds.acks) == 1


# -- a real agent on a "Spot VM" ----------------------------------------------------------------

from tests.helpers import redis_url, spawn_agent, wait_until  # noqa: E402,F401 - fixtures


def test_a_spot_agent_drains_and_stops_at_its_preemption_notice(
    redis_url: str, spawn_agent, monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001, F811 - fixtures
) -> None:
    from agents.app import make_app
    from agents.settings import AgentSettings
    from rm.demand import queue_for

    imds = FakeImds()
    with serve(imds) as served:
        monkeypatch.setenv("RM_SCHEDULED_EVENTS_URL", f"{served.base_url}/metadata/scheduledevents?api-version=2020-07-01")
        queue = queue_for("spot", ())
        settings = AgentSettings(node_id=NODE, pool="burst", cluster="spot", broker_url=redis_url, queues=(queue,),
                                 slots=1, preemption_watch="azure")
        agent = spawn_agent(settings)
        app = make_app(redis_url)
        running = app.send_task("builtin.sleep", kwargs={"seconds": 3}, queue=queue)
        wait_until(lambda: "builtin.sleep" in agent.log() and "received" in agent.log(), "the task never started")
        event_id = imds.add("Preempt", [NODE])
        wait_until(lambda: agent.process.poll() is not None, lambda: f"the agent did not stop:\n{agent.log()}")
        later = app.send_task("builtin.sleep", kwargs={"seconds": 0.1}, queue=queue)
        assert agent.process.returncode == 0, agent.log()
        assert running.get(timeout=WAIT_S) == {"slept": 3.0}, "the warm shutdown cut the running task short"
        assert imds.acks == [{"StartRequests": [{"EventId": event_id}]}]
        assert f"preemption notice {event_id}" in agent.log()
        assert later.state == "PENDING", "a stopped Spot agent must not take new tasks"
