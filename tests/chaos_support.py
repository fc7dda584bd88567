"""What the chaos tests (and ``bench/chaos.py``) share: killing agents as a dying VM would, and the
checks every scenario ends with.

Why a module of its own: the chaos suite and its bench run the same scenarios, and a figure in
the README must come from the code the suite checks. Generic end-to-end helpers (a running
manager, bounded waits, a pool-size sampler) stay in :mod:`tests.e2e_support`.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rm.broker import EmbeddedRedis, free_port
from tests.e2e_support import Running, epoch, wait_for

INSPECT_TIMEOUT_S = 2.0


def sleepers(name: str, count: int, seconds: float) -> dict[str, Any]:
    """A flat job of ``count`` sleeps of ``seconds`` each."""
    return {"name": name, "tasks": [{"name": "s", "run": "builtin.sleep", "args": {"seconds": seconds},
                                     "replicate": count}]}


@dataclass
class Kill:
    """One agent killed with SIGKILL: when, and the tasks (our ids) it was running."""

    node: str
    at: float
    held: set[str] = field(default_factory=set)

    def rerun_delay_s(self, running: Running) -> float | None:
        """Kill -> the first of its tasks started again on another node (None if none had to)."""
        reruns = [epoch(e["at"]) for e in running.events(kind="task-rerun") if e["task"] in self.held]
        return round(min(reruns) - self.at, 3) if reruns else None


def nodes_running(running: Running, job_id: str, exclude: set[str]) -> list[str]:
    """Nodes the API shows running a task of the job, sorted (a seeded choice stays reproducible)."""
    return sorted({t["node"] for t in running.job(job_id)["tasks"]
                   if t["state"] == "running" and t["node"] and t["node"] not in exclude})


def tasks_held_by(running: Running, job_id: str, node_id: str, started_within_s: float) -> set[str]:
    """Our ids of the tasks the agent says (over the broker) it started less than
    ``started_within_s`` ago: tasks that will still be running an instant later, when it is killed."""
    worker = f"{node_id}@{running.runtime.config().cluster}"
    replies = running.runtime.app.control.inspect(destination=[worker], timeout=INSPECT_TIMEOUT_S).active() or {}
    now = time.time()
    celery_ids = {request["id"] for request in replies.get(worker, [])
                  if now - (request.get("time_start") or 0.0) < started_within_s}
    return {row.id for row in running.task_rows(job_id) if row.celery_id in celery_ids}


def kill_agent(running: Running, node_id: str, held: set[str]) -> Kill:
    """SIGKILL the agent's whole process group, as a VM that dies: no warm shutdown, no ack."""
    os.killpg(running.agent_pid(node_id), signal.SIGKILL)
    return Kill(node_id, time.time(), held)


def kill_random_agents(running: Running, job_id: str, count: int, seed: int, task_s: float) -> list[Kill]:
    """Kill ``count`` agents, each drawn (seeded) among those running a task of the job (``task_s``
    long) that is not about to end, one at a time, each once the manager marked the previous one lost."""
    rng = random.Random(seed)
    kills: list[Kill] = []

    def victim() -> tuple[str, set[str]] | None:
        candidates = nodes_running(running, job_id, {k.node for k in kills})
        if not candidates:
            return None
        node = rng.choice(candidates)
        held = tasks_held_by(running, job_id, node, started_within_s=task_s / 2)
        return (node, held) if held else None  # between two tasks, or near their end: draw again

    for _ in range(count):
        kill = kill_agent(running, *wait_for("an agent running a task", victim, timeout_s=120, every_s=0.2))
        kills.append(kill)
        wait_for(f"node {kill.node} marked lost", lambda: [e for e in running.events(kind="lost")
                                                           if e["node"] == kill.node], timeout_s=60)
    return kills


def completions(running: Running, job_id: str) -> dict[int, int]:
    """How many task rows recorded their result 0, 1, 2... times (exactly once is ``{1: n}``)."""
    counts: dict[int, int] = {}
    for row in running.task_rows(job_id):
        counts[row.completions] = counts.get(row.completions, 0) + 1
    return counts


@contextmanager
def own_broker(tmp: Path) -> Iterator[EmbeddedRedis]:
    """A ``redis-server`` of the test's own, with its append-only file, on a port it keeps across
    restarts (agents and manager reconnect to the same address); stopped at the end."""
    server = EmbeddedRedis(tmp / "broker", port=free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class Outage:
    down_at: float
    back_at: float


def broker_outage(server: EmbeddedRedis, down_s: float) -> Outage:
    """Stop the broker as a service restart does (SIGTERM: the append-only file is flushed), keep it
    down ``down_s``, start it again on the same port from the same file."""
    down_at = time.time()
    server.stop()
    time.sleep(max(0.0, down_at + down_s - time.time()))
    server.start()
    return Outage(down_at, time.time())


def first_start_after(running: Running, job_id: str, at: float) -> float | None:
    """Seconds from ``at`` to the first task of the job that started after it."""
    starts = [row.started_at for row in running.task_rows(job_id) if row.started_at and row.started_at >= at]
    return round(min(starts) - at, 3) if starts else None


def job_seconds(job: dict[str, Any]) -> float:
    """Submitted -> finished, from the API's view of a finished job."""
    return round(epoch(job["finished_at"]) - epoch(job["created_at"]), 3)


@dataclass(frozen=True)
class KillRun:
    """Agents SIGKILLed during a job: the job as finished and each kill."""

    job: dict[str, Any]
    kills: list[Kill]
    rerun_delays_s: list[float | None]


def agents_killed_during_a_job(running: Running, tasks: int, seconds: float, kills: int, seed: int) -> KillRun:
    """Submit ``tasks`` sleeps, kill ``kills`` agents running them (seeded draw), wait for the end."""
    job_id = running.client.post("/api/v1/jobs", sleepers("chaos-kill", tasks, seconds))["id"]
    done = kill_random_agents(running, job_id, kills, seed, task_s=seconds)
    job = running.finished_job(job_id, timeout_s=300)
    return KillRun(job, done, [kill.rerun_delay_s(running) for kill in done])


@dataclass(frozen=True)
class OutageRun:
    """A job across a broker outage (or none: a baseline) and what followed it."""

    job: dict[str, Any]
    outage: Outage | None
    first_start_after_back_s: float | None


def job_across_a_broker_outage(running: Running, broker: EmbeddedRedis | None, tasks: int, seconds: float,
                               down_s: float) -> OutageRun:
    """Submit ``tasks`` sleeps; once a fifth of them succeeded, stop the broker for ``down_s`` and
    start it again (no outage when ``broker`` is None: the baseline); wait for the job's end."""
    job_id = running.client.post("/api/v1/jobs", sleepers("chaos-broker", tasks, seconds))["id"]
    wait_for("the job under way", lambda: running.job(job_id)["progress"].get("succeeded", 0) >= tasks // 5,
             timeout_s=120, every_s=0.2)
    outage = broker_outage(broker, down_s) if broker is not None else None
    job = running.finished_job(job_id, timeout_s=240)
    back = first_start_after(running, job_id, outage.back_at) if outage else None
    return OutageRun(job, outage, back)
