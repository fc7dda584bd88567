"""The one Celery application definition shared by the manager (publisher) and the agents.

Why shared: the delivery guarantees are settings on both ends. Acks late + reject on worker
lost + prefetch 1 mean a message leaves Redis only when its task has finished; a short
visibility timeout that agents keep renewing for the messages they hold (see
:mod:`agents.lease`) means a dead node's messages are redelivered within seconds while a
long task on a live node is never redelivered; deduplication of redelivered messages whose
result is already stored means a redelivery does not re-run finished work. A result (or a
"started" mark) written while the broker restarts is retried until it is back, for about as
long as an outage can last, instead of failing the task with "Connection refused".
"""

from __future__ import annotations

from celery import Celery

from agents.backend import backend_url

DEFAULT_PRIORITY = 5
#: Result backend retries during a broker outage: 100 ms doubling to 2 s (Celery adds full
#: jitter), 90 tries, so a result written while the broker is down waits about 1.5 min for it.
BACKEND_RETRIES = 90
BACKEND_FIRST_RETRY_MS = 100
BACKEND_MAX_RETRY_MS = 2000


def make_app(
    broker_url: str,
    *,
    visibility_timeout_s: float = 10.0,
    restore_interval_s: float = 2.0,
    soft_shutdown_timeout_s: float = 10.0,
) -> Celery:
    app = Celery("hybrid-rm", broker=broker_url, backend=backend_url(broker_url), set_as_current=False)
    transport = {
        "visibility_timeout": visibility_timeout_s,
        "unacked_restore_interval": restore_interval_s,
        "unacked_restore_throttle": 1,  # scan on every sweep: the sweep is already spaced out
        # The sweep holds a Redis lock; an agent SIGKILLed while holding it would block every
        # other agent's sweep until the lock expires (kombu's default: 300 s).
        "unacked_mutex_expire": 30,
        "queue_order_strategy": "priority",
    }
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        worker_deduplicate_successful_tasks=True,
        worker_send_task_events=True,
        task_send_sent_event=False,  # the manager records each task's queue itself: half the publish cost
        task_track_started=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_default_priority=DEFAULT_PRIORITY,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": visibility_timeout_s},
        result_backend_always_retry=True,
        result_backend_max_retries=BACKEND_RETRIES,
        result_backend_base_sleep_between_retries_ms=BACKEND_FIRST_RETRY_MS,
        result_backend_max_sleep_between_retries_ms=BACKEND_MAX_RETRY_MS,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_soft_shutdown_timeout=soft_shutdown_timeout_s,
        worker_hijack_root_logger=True,
        event_queue_expires=60,
        event_queue_ttl=10,
        timezone="UTC",
    )
    return app
