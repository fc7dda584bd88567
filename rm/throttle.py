"""A per-client refusal throttle: after ``limit`` refusals in ``window_s``, answer 429.

Why: the enrolment endpoint takes a bearer secret from machines that have nothing else; a
client guessing tokens must be slowed down long before a guess could succeed, while a VM that
enrols normally is never refused. Only refused guesses (unknown tokens) count, so honest
traffic, and VMs sharing one NAT address whose real tokens are refused, never trip it.
In memory and per process: a restart forgets, which costs an attacker at most one more window.
The clock is an argument, so the rule is tested without sleeping.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque

ENROL_REFUSAL_LIMIT = 10
WINDOW_S = 60.0
MAX_CLIENTS = 10_000  # the least recently refused client is forgotten first


class RefusalThrottle:
    def __init__(self, limit: int = ENROL_REFUSAL_LIMIT, window_s: float = WINDOW_S,
                 max_clients: int = MAX_CLIENTS) -> None:
        self.limit, self.window_s, self.max_clients = limit, window_s, max_clients
        self._refusals: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self._refusals.get(client, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after(self, client: str, now: float) -> int | None:
        """Seconds until ``client`` may try again, or None when it is not throttled."""
        with self._lock:
            times = self._recent(client, now)
            if len(times) < self.limit:
                return None
            return max(1, math.ceil(times[len(times) - self.limit] + self.window_s - now))

    def refused(self, client: str, now: float) -> None:
        """Count one refusal of ``client``."""
        with self._lock:
            times = self._recent(client, now)
            times.append(now)
            while len(times) > self.limit:  # more is never needed to decide
                times.popleft()
            self._refusals[client] = times
            self._refusals.move_to_end(client)
            while len(self._refusals) > self.max_clients:
                self._refusals.popitem(last=False)
