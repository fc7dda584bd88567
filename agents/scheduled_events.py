"""Watch Azure's Scheduled Events for this VM's Spot eviction, so the agent leaves warmly.

Why: Azure gives a Spot VM at least 30 s notice of its eviction as a ``Preempt`` event on the
Instance Metadata Service (IMDS). Seeing it, the agent stops consuming and shuts down warmly (its
callback does that); tasks it had not finished are redelivered elsewhere (acks late). Then the
event is acknowledged (``StartRequests``) so the platform proceeds instead of waiting out the
notice period on a VM that has nothing left to do.

Only ``Preempt`` events whose ``Resources`` name this VM count: events are delivered to every VM
of an availability set or scale-set placement group, and ``Freeze``/``Reboot``/``Redeploy``
maintenance is survivable, so those are ignored. IMDS is link-local and plain HTTP; it is polled
about once a second with a short timeout, errors are tolerated (logged once, not every second),
and proxies are bypassed (IMDS refuses proxied requests).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("agents.scheduled_events")

DEFAULT_URL = "http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01"
URL_ENV = "RM_SCHEDULED_EVENTS_URL"  # the agent passes it as ``url`` when set (tests, other IMDS proxies)
PREEMPT = "Preempt"


class PreemptionWatcher(threading.Thread):
    """A daemon thread polling IMDS; calls ``on_preempt(event)`` once when this VM is preempted."""

    def __init__(
        self,
        node_id: str,
        on_preempt: Callable[[dict], None],
        url: str = DEFAULT_URL,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        super().__init__(name=f"preemption-watcher-{node_id}", daemon=True)
        self.node_id = node_id
        self.on_preempt = on_preempt
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.fired = threading.Event()  # set once the callback has been called
        self._stopping = threading.Event()
        self._acked: set[str] = set()
        self._failing = False
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        log.info("node=%s watching %s for a Spot eviction", self.node_id, self.url)
        while not self._stopping.is_set():
            self.poll_once()
            self._stopping.wait(self.interval_s)

    # -- one poll --------------------------------------------------------------------------
    def poll_once(self) -> None:
        """Fetch the events; on a Preempt of this VM call back (once) and acknowledge it."""
        document = self._fetch()
        if document is None:
            return
        for event in self._preemptions(document):
            if not self.fired.is_set():
                self.fired.set()
                log.warning("node=%s: Azure will evict this VM (event %s, not before %s); shutting down",
                            self.node_id, event.get("EventId"), event.get("NotBefore"))
                try:
                    self.on_preempt(event)
                except Exception:  # noqa: BLE001 - the ack must still go out
                    log.exception("node=%s: the preemption callback failed", self.node_id)
            event_id = event.get("EventId")
            if event_id and event_id not in self._acked and event.get("EventStatus", "Scheduled") == "Scheduled":
                if self._ack(event_id):
                    self._acked.add(event_id)

    def _preemptions(self, document: Any) -> list[dict]:
        events = document.get("Events") if isinstance(document, dict) else None
        mine = self.node_id.lower()
        return [
            event for event in events or []
            if isinstance(event, dict)
            and event.get("EventType") == PREEMPT
            and any(str(name).lower() == mine for name in event.get("Resources") or [])
        ]

    # -- HTTP ------------------------------------------------------------------------------
    def _request(self, data: bytes | None = None) -> bytes:
        headers = {"Metadata": "true"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST" if data else "GET")
        with self._opener.open(request, timeout=self.timeout_s) as response:
            return response.read()

    def _fetch(self) -> Any:
        try:
            document = json.loads(self._request())
        except (OSError, ValueError) as error:  # URLError/HTTPError/timeouts are OSErrors
            self._failed(f"cannot read scheduled events: {error}")
            return None
        if self._failing:
            log.info("node=%s: scheduled events readable again", self.node_id)
            self._failing = False
        return document

    def _ack(self, event_id: str) -> bool:
        body = json.dumps({"StartRequests": [{"EventId": event_id}]}).encode()
        try:
            self._request(body)
        except OSError as error:
            self._failed(f"cannot acknowledge event {event_id}: {error}")
            return False
        log.info("node=%s: acknowledged event %s; the platform may proceed", self.node_id, event_id)
        return True

    def _failed(self, message: str) -> None:
        """Log the first failure of a run of failures as a warning, the rest at debug level."""
        log.log(logging.DEBUG if self._failing else logging.WARNING, "node=%s: %s", self.node_id, message)
        self._failing = True
