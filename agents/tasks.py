"""Built-in tasks every agent can run, on-premises or in the cloud.

Why so few: they are what the demo, the tests and the benchmarks need to exercise the loop
(waiting, burning CPU, passing data through). Real work comes from task modules an admin lists.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery

from agents.shell import SHELL_TASK, shell_task

MAX_SECONDS = 24 * 3600


def _seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= MAX_SECONDS:
        raise ValueError(f"seconds must be a number between 0 and {MAX_SECONDS}, got {value!r}")
    return float(value)


def sleep(seconds: float = 1.0) -> dict[str, float]:
    """Wait ``seconds`` without using the CPU (an I/O-bound step such as a download)."""
    seconds = _seconds(seconds)
    time.sleep(seconds)
    return {"slept": seconds}


def cpu(seconds: float = 1.0) -> dict[str, float]:
    """Burn one CPU for ``seconds`` (a compute-bound step such as ortho-rectification)."""
    seconds = _seconds(seconds)
    deadline = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < deadline:
        sum(i * i for i in range(1000))
        rounds += 1
    return {"seconds": seconds, "rounds": rounds}


def echo(**kwargs: Any) -> dict[str, Any]:
    """Return the arguments unchanged (the last step of a pipeline that only reports)."""
    return kwargs


BUILTIN_TASKS = {"builtin.sleep": sleep, "builtin.cpu": cpu, "builtin.echo": echo}
TASK_NAMES = frozenset({*BUILTIN_TASKS, SHELL_TASK})  # what a workflow may name (shell only when allowed)


def register_builtin_tasks(app: Celery, allow_shell: bool = False) -> None:
    """Register the built-ins; ``builtin.shell`` always, so a shell message is refused, not lost."""
    for name, function in BUILTIN_TASKS.items():
        app.task(name=name)(function)
    app.task(name=SHELL_TASK)(shell_task(allow_shell))
