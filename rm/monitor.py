"""A thread that receives the workers' Celery events and hands them to the controller.

Why a queue between them: the receiver must keep draining the event stream (it is pub/sub:
what nobody reads is gone), while the controller applies events only at the top of its tick,
so a tick sees one consistent picture. The receiver reconnects on broker restarts by itself.

It also says whether the broker is *heard* (:meth:`EventMonitor.hearing`): while the broker is
down no heartbeat can arrive, so an agent's silence then says nothing about the agent, and the
node keeper must not take it for lost (see :mod:`rm.nodes`).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery

log = logging.getLogger("rm.monitor")

RECONNECT_DELAY_S = 1.0


@dataclass(frozen=True)
class Hearing:
    """Since when the broker has been heard without a break (None: not now), and when it was last
    heard again after an outage (None: never lost since the start)."""

    since: float | None
    resumed_at: float | None = None


class EventMonitor(threading.Thread):
    def __init__(self, app: Celery) -> None:
        super().__init__(name="event-monitor", daemon=True)
        self.app = app
        self.events: queue.SimpleQueue[tuple[float, dict[str, Any]]] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._receiver: Any = None
        self.connected = threading.Event()
        self._hearing = Hearing(since=None)
        self._lost_at: float | None = None

    def hearing(self) -> Hearing:
        return self._hearing

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.put((time.time(), event))

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with self.app.connection_for_read() as connection:
                    connection.connect()  # raises while the broker is down: not heard yet
                    self._receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
                    self._heard(time.time())
                    for _ in self._receiver.itercapture(limit=None, timeout=None, wakeup=False):
                        pass
            except Exception as error:  # broker gone or restarting: retry, never die
                if not self._halt.is_set():
                    self._unheard(time.time(), error)
                    self._halt.wait(RECONNECT_DELAY_S)

    def _heard(self, now: float) -> None:
        resumed_at = self._hearing.resumed_at
        if self._lost_at is not None:
            log.warning("event receiver hears the broker again after %.1f s", now - self._lost_at)
            resumed_at, self._lost_at = now, None
        self._hearing = Hearing(since=now, resumed_at=resumed_at)
        self.connected.set()

    def _unheard(self, now: float, error: BaseException) -> None:
        """One warning per outage, not one per reconnection attempt."""
        self.connected.clear()
        self._hearing = Hearing(since=None, resumed_at=self._hearing.resumed_at)
        if self._lost_at is None:
            self._lost_at = now
            log.warning("event receiver lost the broker (%s); reconnecting every %.0f s", error, RECONNECT_DELAY_S)

    def drain(self) -> list[tuple[float, dict[str, Any]]]:
        items = []
        while True:
            try:
                items.append(self.events.get_nowait())
            except queue.Empty:
                return items

    def stop(self) -> None:
        self._halt.set()
        if self._receiver is not None:
            self._receiver.should_stop = True  # checked between one-second drains
