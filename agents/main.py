"""The agent process: ``python -m agents.main``, its settings from ``agents.enrol``.

Why settings in the environment (local nodes) or a root-only file (cloud VMs) and not argv:
the broker URL may carry a password, and argv is world-readable in ``ps``. The agent waits
``boot_delay_s`` (a simulated VM boot), then runs a Celery worker named after its node id,
consuming exactly the queues it was given. On an Azure Spot VM it also watches for a
preemption notice and drains itself (stops consuming, shuts down warmly) when one comes.
"""

from __future__ import annotations

import importlib
import logging
import os
import time

from celery import signals

from agents.app import make_app
from agents.enrol import SETTINGS_ENV, load_settings
from agents.lease import LeaseRenewer
from agents.logs import install as install_log_ids
from agents.settings import AgentSettings
from agents.tls import agent_broker_url
from agents.tasks import register_builtin_tasks

__all__ = ["SETTINGS_ENV", "build_worker_argv", "main", "run"]

log = logging.getLogger("agents.main")


def build_worker_argv(settings: AgentSettings) -> list[str]:
    return [
        "worker",
        f"--hostname={settings.worker_name}",
        f"--queues={','.join(settings.queues)}",
        f"--concurrency={settings.slots}",
        "--pool=prefork",
        "--events",
        "--without-gossip",
        "--without-mingle",
        "--optimization=fair",
        "--loglevel=INFO",
    ]


def run(settings: AgentSettings) -> None:
    if settings.boot_delay_s:
        time.sleep(settings.boot_delay_s)
    broker_url = agent_broker_url(settings.broker_url, settings.broker_ca_pem)
    app = make_app(
        broker_url,
        visibility_timeout_s=settings.visibility_timeout_s,
        restore_interval_s=settings.restore_interval_s,
        soft_shutdown_timeout_s=settings.soft_shutdown_timeout_s,
    )
    register_builtin_tasks(app, allow_shell=settings.allow_shell)
    for module in settings.task_modules:
        importlib.import_module(module)
    renewer = LeaseRenewer(broker_url, settings.lease_renew_s)

    watcher = _preemption_watcher(settings, app)

    @signals.worker_ready.connect(weak=False)
    def _start_lease_renewal(**_kwargs: object) -> None:
        renewer.start()
        if watcher is not None:
            watcher.start()

    @signals.after_setup_logger.connect(weak=False)
    @signals.after_setup_task_logger.connect(weak=False)
    def _ids_in_logs(logger, **_kwargs: object) -> None:  # noqa: ANN001 - Celery signal
        install_log_ids(logger, settings.node_id, settings.pool)

    try:
        app.worker_main(build_worker_argv(settings))
    finally:
        renewer.stop()
        if watcher is not None:
            watcher.stop()


def _preemption_watcher(settings: AgentSettings, app):  # noqa: ANN001, ANN202 - Celery app, a thread or None
    """On a Spot VM: stop consuming at a preemption notice, so held tasks go elsewhere, then shut down."""
    if settings.preemption_watch != "azure":
        return None
    from agents.scheduled_events import DEFAULT_URL, PreemptionWatcher

    def drain(event: dict) -> None:
        log.warning("node=%s pool=%s preemption notice %s: draining", settings.node_id, settings.pool,
                    event.get("EventId"))
        for queue in settings.queues:
            app.control.cancel_consumer(queue, destination=[settings.worker_name])
        app.control.shutdown(destination=[settings.worker_name])  # warm: running tasks finish or are redelivered

    return PreemptionWatcher(settings.node_id, drain, url=os.environ.get("RM_SCHEDULED_EVENTS_URL") or DEFAULT_URL)


def main() -> None:
    run(load_settings())


if __name__ == "__main__":
    main()
