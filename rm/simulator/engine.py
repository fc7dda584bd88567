"""The event heap on a virtual clock.

Why a heap and not a time-stepped loop: boots, task completions and arrivals happen at
arbitrary instants; popping the next one jumps the clock straight to it, so an idle night costs
nothing. Events at the same instant run in the order they were scheduled (a sequence number
breaks ties), which keeps a run deterministic for a given seed.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Handler = Callable[..., None]


@dataclass
class Engine:
    """Virtual time and the events still to happen."""

    now: float = 0.0
    _heap: list[tuple[float, int, Handler, tuple[Any, ...]]] = field(default_factory=list)
    _seq: int = 0
    processed: int = 0

    def at(self, when: float, handler: Handler, *args: Any) -> None:
        """Run ``handler(*args)`` at virtual time ``when`` (never in the past)."""
        self._seq += 1
        heapq.heappush(self._heap, (max(when, self.now), self._seq, handler, args))

    def after(self, delay: float, handler: Handler, *args: Any) -> None:
        self.at(self.now + delay, handler, *args)

    def __len__(self) -> int:
        return len(self._heap)

    def next_time(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Run the next event; False when none is left."""
        if not self._heap:
            return False
        when, _, handler, args = heapq.heappop(self._heap)
        self.now = when
        self.processed += 1
        handler(*args)
        return True

    def run_until(self, end: float, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Run events up to ``end`` (inclusive) while ``keep_going()`` holds."""
        while self._heap and self._heap[0][0] <= end and keep_going():
            self.step()
