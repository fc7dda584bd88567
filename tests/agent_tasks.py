"""A task module loaded by agents in tests (via ``AgentSettings.task_modules``).

``test.spawn_sleeper`` starts a subprocess of its own, as real workloads do (a converter, a
shell step). Celery kills its pool processes when their parent dies (PDEATHSIG), but not their
children: this is the orphan a node's destroy must still reap.
"""

from __future__ import annotations

import subprocess
import time

from celery import shared_task


@shared_task(name="test.spawn_sleeper")
def spawn_sleeper(seconds: float = 120.0) -> int:
    child = subprocess.Popen(["sleep", str(int(seconds) + 60)])
    time.sleep(seconds)
    child.kill()
    return child.pid
