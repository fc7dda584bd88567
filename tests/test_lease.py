"""Lease renewal: unit behaviour on a real Redis, then real agents with a short visibility timeout.

The contract (agents/lease.py, DESIGN §3 scale-down): a long task on a live node is never redelivered
even though it outlives the visibility timeout, and a dead node's task is redelivered within seconds.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import redis

from agents.app import make_app
from agents.lease import UNACKED_INDEX_KEY, LeaseRenewer, renew
from agents.settings import AgentSettings
from rm.demand import queue_for
from tests.helpers import redis_client, redis_url, spawn_agent, wait_until  # noqa: F401 - fixtures

CLUSTER = "leasetest"
QUEUE = queue_for(CLUSTER, ())
LEASE = {"visibility_timeout_s": 4.0, "lease_renew_s": 1.0, "restore_interval_s": 1.0}


def agent_settings(node_id: str, url: str, **overrides: object) -> AgentSettings:
    return AgentSettings(**{"node_id": node_id, "pool": "onprem", "cluster": CLUSTER, "broker_url": url,
                            "queues": (QUEUE,), "slots": 1, **LEASE, **overrides})


def received_lines(log: str, task_id: str) -> int:
    return len(re.findall(rf"Task builtin\.sleep\[{re.escape(task_id)}\] received", log))


# -- renew() on a real Redis ---------------------------------------------------------------------
def test_renew_rescores_only_members_already_indexed(redis_client: redis.Redis) -> None:  # noqa: F811
    redis_client.zadd(UNACKED_INDEX_KEY, {"held": 100.0, "other": 100.0})
    changed = renew(redis_client, ["held", "acked-meanwhile"], now=250.0)
    assert changed == 1
    assert redis_client.zscore(UNACKED_INDEX_KEY, "held") == 250.0
    assert redis_client.zscore(UNACKED_INDEX_KEY, "other") == 100.0  # somebody else's lease is untouched
    assert redis_client.zscore(UNACKED_INDEX_KEY, "acked-meanwhile") is None  # XX: never resurrected
    assert redis_client.zcard(UNACKED_INDEX_KEY) == 2


def test_renew_counts_only_changed_scores(redis_client: redis.Redis) -> None:  # noqa: F811
    redis_client.zadd(UNACKED_INDEX_KEY, {"a": 1.0, "b": 2.0, "c": 3.0})
    assert renew(redis_client, ["a", "b", "c"], now=10.0) == 3
    assert renew(redis_client, ["a", "b"], now=10.0) == 0  # same score: nothing changed
    assert renew(redis_client, [], now=20.0) == 0
    assert renew(redis_client, ["zzz"], now=20.0) == 0
    assert dict(redis_client.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)) == {b"a": 10.0, b"b": 10.0, b"c": 10.0}


def test_renewer_thread_renews_held_tags_until_stopped(
    redis_url: str, redis_client: redis.Redis,  # noqa: F811
) -> None:
    redis_client.zadd(UNACKED_INDEX_KEY, {"mine": 1.0, "theirs": 1.0})
    renewer = LeaseRenewer(redis_url, every_s=0.1, tags=lambda: ["mine"])
    renewer.start()
    try:
        wait_until(lambda: (redis_client.zscore(UNACKED_INDEX_KEY, "mine") or 0) > time.time() - 60,
                   "the renewer never re-scored its tag")
    finally:
        renewer.stop()
    renewer.join(timeout=30)  # regression: a `_stop` attribute once shadowed Thread._stop and broke join()
    assert not renewer.is_alive()
    assert redis_client.zscore(UNACKED_INDEX_KEY, "theirs") == 1.0


# -- real agents ---------------------------------------------------------------------------------
def test_long_task_outliving_the_visibility_timeout_runs_exactly_once(
    redis_url: str, redis_client: redis.Redis, spawn_agent: Callable,  # noqa: F811
) -> None:
    runner = spawn_agent(agent_settings("lease-run", redis_url))
    # A second, idle agent on the same queue: a message restored by mistake would run there at once.
    bystander = spawn_agent(agent_settings("lease-idle", redis_url))
    app = make_app(redis_url)
    try:
        seconds = 3 * LEASE["visibility_timeout_s"]
        result = app.send_task("builtin.sleep", kwargs={"seconds": seconds}, queue=QUEUE)

        wait_until(lambda: redis_client.zcard(UNACKED_INDEX_KEY) == 1, "the message was never delivered")
        tag, first_score = redis_client.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)[0]
        # the holder keeps its lease fresh while the task runs past the visibility timeout
        wait_until(
            lambda: (redis_client.zscore(UNACKED_INDEX_KEY, tag) or 0) > first_score + LEASE["visibility_timeout_s"],
            lambda: f"the lease was not renewed past the visibility timeout (state {result.state}, "
                    f"index {redis_client.zrange(UNACKED_INDEX_KEY, 0, -1, withscores=True)})",
        )  # (the tag is only in the index while the message is held: this happened mid-task)

        wait_until(lambda: result.state == "SUCCESS", lambda: f"task never succeeded (state {result.state})")
        assert result.get(timeout=10) == {"slept": seconds}
        worker = result.backend.get_task_meta(result.id)["worker"]
        assert worker == runner.settings.worker_name
        # exactly once: one delivery in all the logs, nothing left unacked or waiting
        logs = runner.log() + bystander.log()
        assert received_lines(logs, result.id) == 1, logs
        assert redis_client.zcard(UNACKED_INDEX_KEY) == 0
        assert redis_client.hlen("unacked") == 0
        assert redis_client.llen(QUEUE) == 0
        # regression: a Thread subclass shadowing Thread._stop broke threading's after-fork hook in pool children
        assert "_after_fork" not in runner.log(), runner.log()
    finally:
        app.close()


def test_task_of_a_killed_agent_is_redelivered_to_another(
    redis_url: str, redis_client: redis.Redis, spawn_agent: Callable,  # noqa: F811
) -> None:
    doomed = spawn_agent(agent_settings("lease-doomed", redis_url))
    app = make_app(redis_url)
    try:
        result = app.send_task("builtin.sleep", kwargs={"seconds": 6}, queue=QUEUE)
        wait_until(lambda: result.state == "STARTED", lambda: f"task never started (state {result.state})")
        assert received_lines(doomed.log(), result.id) == 1
        doomed.kill()  # the VM dies: SIGKILL to the whole process group, no chance to requeue
        assert redis_client.hlen("unacked") == 1  # the message is parked with the dead node's stale lease

        rescuer = spawn_agent(agent_settings("lease-rescuer", redis_url))
        wait_until(lambda: result.state == "SUCCESS",
                   lambda: f"task was not redelivered (state {result.state}); rescuer log:\n{rescuer.log()}")
        meta = result.backend.get_task_meta(result.id)
        assert meta["worker"] == rescuer.settings.worker_name
        assert meta["result"] == {"slept": 6.0}
        assert received_lines(rescuer.log(), result.id) == 1
        assert redis_client.hlen("unacked") == 0
    finally:
        app.close()
