"""The result backend: Celery's Redis backend, minus the subscription made on every send.

Why: Celery's Redis backend subscribes the *publisher* to a pub/sub channel per task it sends,
so that ``AsyncResult.get()`` can wait without polling. The manager never waits that way: it
reads outcomes in batches from the stored results each tick. Subscribing anyway would leave one
channel and one unread message per task on the manager's connection (20,000 for a big job),
until Redis drops the client for exceeding its pub/sub output buffer. ``get()`` still works: it
subscribes when it is actually called.
"""

from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend


class PollingRedisBackend(RedisBackend):
    def on_task_call(self, producer: Any, task_id: str) -> None:
        return None


def backend_url(broker_url: str) -> str:
    """The URL form Celery resolves to this class (``<class path>+redis://...``)."""
    return f"agents.backend:PollingRedisBackend+{broker_url}"
