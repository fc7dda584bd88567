"""A thread that receives the workers' Celery events and hands them to the controller.

Why a queue between them: the receiver must keep draining the event stream (it is pub/sub:
what nobody reads is gone), while the controller applies events only at the top of its tick,
so a tick sees one consistent picture. The receiver reconnects on broker restarts by itself.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from celery import Celery

log = logging.getLogger("rm.monitor")

RECONNECT_DELAY_S = 1.0


class EventMonitor(threading.Thread):
    def __init__(self, app: Celery) -> None:
        super().__init__(name="event-monitor", daemon=True)
        self.app = app
        self.events: queue.SimpleQueue[tuple[float, dict[str, Any]]] = queue.SimpleQueue()
        self._halt = threading.Event()
        self._receiver: Any = None
        self.connected = threading.Event()

    def _on_event(self, event: dict[str, Any]) -> None:
        self.events.put((time.time(), event))

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                with self.app.connection_for_read() as connection:
                    self._receiver = self.app.events.Receiver(connection, handlers={"*": self._on_event})
                    self.connected.set()
                    for _ in self._receiver.itercapture(limit=None, timeout=None, wakeup=False):
                        pass
            except Exception as error:  # broker gone or restarting: retry, never die
                self.connected.clear()
                if not self._halt.is_set():
                    log.warning("event receiver lost the broker (%s); reconnecting", error)
                    self._halt.wait(RECONNECT_DELAY_S)

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
