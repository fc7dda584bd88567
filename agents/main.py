"""The agent process: ``python -m agents.main`` with its settings in ``RM_AGENT_SETTINGS``.

Why settings in the environment and not argv: the broker URL may carry a password, and argv
is world-readable in ``ps``. The agent waits ``boot_delay_s`` (a simulated VM boot), then runs
a Celery worker named after its node id, consuming exactly the queues it was given.
"""

from __future__ import annotations

import importlib
import os
import sys
import time

from celery import signals

from agents.app import make_app
from agents.lease import LeaseRenewer
from agents.logs import install as install_log_ids
from agents.settings import AgentSettings
from agents.tasks import register_builtin_tasks

SETTINGS_ENV = "RM_AGENT_SETTINGS"


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
    app = make_app(
        settings.broker_url,
        visibility_timeout_s=settings.visibility_timeout_s,
        restore_interval_s=settings.restore_interval_s,
        soft_shutdown_timeout_s=settings.soft_shutdown_timeout_s,
    )
    register_builtin_tasks(app)
    for module in settings.task_modules:
        importlib.import_module(module)
    renewer = LeaseRenewer(settings.broker_url, settings.lease_renew_s)

    @signals.worker_ready.connect(weak=False)
    def _start_lease_renewal(**_kwargs: object) -> None:
        renewer.start()

    @signals.after_setup_logger.connect(weak=False)
    @signals.after_setup_task_logger.connect(weak=False)
    def _ids_in_logs(logger, **_kwargs: object) -> None:  # noqa: ANN001 - Celery signal
        install_log_ids(logger, settings.node_id, settings.pool)

    try:
        app.worker_main(build_worker_argv(settings))
    finally:
        renewer.stop()


def main() -> None:
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        sys.exit(f"{SETTINGS_ENV} is not set: the agent needs its settings (node id, pool, broker, queues)")
    run(AgentSettings.from_json(raw))


if __name__ == "__main__":
    main()
