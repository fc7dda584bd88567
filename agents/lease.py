"""Lease renewal for the messages this agent holds.

Why: Redis has no per-consumer delivery tracking. Kombu keeps every delivered, unacked message
in the ``unacked`` hash, scored in ``unacked_index`` by delivery time, and any live worker
restores messages older than the visibility timeout. A long visibility timeout makes a dead
node's task wait an hour; a short one re-runs long tasks that are still running. So the
timeout is short and every agent re-scores, every ``lease_renew_s``, the messages it holds
(reserved or running). Only a dead agent stops renewing; its messages come back within
``visibility_timeout_s + restore_interval_s`` seconds, and nobody else's ever do.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable

import redis

log = logging.getLogger("agents.lease")

UNACKED_INDEX_KEY = "unacked_index"


def held_delivery_tags() -> list[str]:
    """Delivery tags of the requests this worker process holds (reserved or active)."""
    from celery.worker import state

    for _ in range(3):  # the sets are WeakSets mutated by the event loop: retry a racy copy
        try:
            requests = list(state.reserved_requests) + list(state.active_requests)
            break
        except RuntimeError:
            continue
    else:
        return []
    tags = []
    for request in requests:
        message = getattr(request, "message", None)
        tag = getattr(message, "delivery_tag", None)
        if tag:
            tags.append(tag)
    return tags


def renew(client: redis.Redis, tags: Iterable[str], now: float) -> int:
    """Re-score the given tags to ``now``; only tags still in the index are touched (XX)."""
    mapping = {tag: now for tag in tags}
    if not mapping:
        return 0
    return client.zadd(UNACKED_INDEX_KEY, mapping, xx=True, ch=True)


class LeaseRenewer(threading.Thread):
    def __init__(self, broker_url: str, every_s: float, tags: Callable[[], list[str]] = held_delivery_tags):
        super().__init__(name="lease-renewer", daemon=True)
        self._client = redis.Redis.from_url(broker_url, socket_timeout=5)
        self._every_s = every_s
        self._tags = tags
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self._every_s):
            try:
                renew(self._client, self._tags(), time.time())
            except redis.RedisError as error:  # broker restarting: the next round retries
                log.warning("lease renewal failed, retrying: %s", error)

    def stop(self) -> None:
        self._halt.set()
