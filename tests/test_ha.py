"""High availability: the leader lease, its fence, the elector, and a leader SIGKILLed mid-job.

The unit tests run on SQLite and PostgreSQL (the lease is conditional UPDATEs, which both must
serialise the same way) with a clock passed in, so "after expiry" is exact. The end-to-end test
runs two real ``rmctl up`` processes on one PostgreSQL database and one redis-server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import redis
import yaml
from sqlalchemy import func, select, text

from agents.app import make_app
from providers.base import CloudNode, LaunchRequest, LaunchResult, PoolSpec, Provider
from rm.activity import ActivityTracker
from rm.actuator import Actuator
from rm.config import ConfigError, parse_config
from rm.demand import queue_for, waiting_by_queue
from rm.election import Elector
from rm.events import EventKind, record_event
from rm.jobs import JobService
from rm.leader import Fence, Lease, StaleLeader
from rm.lifecycle import change_status, create_node
from rm.metrics import LEADER
from rm.models import Node, NodeHistory, ScalingEvent, Task
from rm.states import NodeStatus
from rm.store import Store
from tests.e2e_support import epoch, processes_under, wait_for
from tests.ha_support import HaPair
from tests.helpers import redis_client, redis_url  # noqa: F401 - fixtures

LEASE_S = 3.0
T0 = 1_000.0


def lease(store: Store, holder: str, name: str = "demo") -> Lease:
    instance = Lease(store, name, holder, LEASE_S)
    instance.ensure()
    return instance


def fenced(store: Store, holder: str) -> Fence:
    return Fence(lease(store, holder))


def add_node(store: Store, node_id: str) -> None:
    with store.session() as session:
        create_node(session, Node(id=node_id, cluster="demo", pool="burst", provider="local", slots=1, labels=[],
                                  extra={}), "test", T0)


# -- the lease ---------------------------------------------------------------------------------
def test_a_free_lease_is_taken_at_epoch_1(store: Store) -> None:
    a = lease(store, "a")
    epoch, previous = a.take_over(T0)
    assert epoch == 1 and previous.holder == "" and previous.epoch == 0
    assert a.read().holder == "a" and a.read().expires_at == T0 + LEASE_S


def test_takeover_happens_only_after_expiry(store: Store) -> None:
    a, b = lease(store, "a"), lease(store, "b")
    assert a.take_over(T0)[0] == 1
    assert b.take_over(T0 + LEASE_S - 0.001) is None  # a's lease still runs
    assert a.renew(1, T0 + 2) is True  # renewed: now runs until T0 + 5
    assert b.take_over(T0 + LEASE_S + 1) is None
    epoch, previous = b.take_over(T0 + 2 + LEASE_S)
    assert (epoch, previous.holder, previous.epoch) == (2, "a", 1)
    assert a.renew(1, T0 + 6) is False  # a's epoch is stale: it cannot renew
    assert a.read().holder == "b"


def test_epochs_only_increase_across_holders(store: Store) -> None:
    instances = [lease(store, name) for name in ("a", "b", "a2")]
    epochs = []
    for step, instance in enumerate(instances * 2):
        epochs.append(instance.take_over(T0 + step * 10)[0])
    assert epochs == [1, 2, 3, 4, 5, 6]


def test_a_released_lease_is_taken_at_once(store: Store) -> None:
    a, b = lease(store, "a"), lease(store, "b")
    a.take_over(T0)
    assert b.release(1, T0 + 1) is False  # only the holder may release
    assert a.release(1, T0 + 1) is True
    assert b.take_over(T0 + 1)[0] == 2


def test_two_instances_racing_for_an_expired_lease_get_one_epoch(store: Store) -> None:
    contenders = [lease(store, f"i{n}") for n in range(4)]
    results: list[object] = []
    barrier = threading.Barrier(len(contenders))

    def race(instance: Lease) -> None:
        barrier.wait()
        results.append(instance.take_over(T0))

    threads = [threading.Thread(target=race, args=(c,)) for c in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    winners = [r for r in results if r is not None]
    assert len(results) == 4 and len(winners) == 1 and winners[0][0] == 1


# -- the fence ---------------------------------------------------------------------------------
def test_a_stale_epoch_is_refused_with_a_clear_message(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    a, b = fenced(store, "a"), fenced(store, "b")
    a.epoch = a.lease.take_over(T0)[0]
    a.check("launch in pool burst")  # the holder passes
    b.epoch = b.lease.take_over(T0 + LEASE_S)[0]
    with pytest.raises(StaleLeader) as refused:
        a.check("launch in pool burst")
    assert str(refused.value) == ("instance a refuses to launch in pool burst: it acts under epoch 1 "
                                  "but the lease is held by instance b at epoch 2")
    assert "instance a refuses to launch in pool burst" in caplog.text
    b.check("launch in pool burst")
    with pytest.raises(StaleLeader, match="acts under epoch None"):
        fenced(store, "c").check("terminate")  # never elected: refused too


def test_node_writes_commit_only_under_the_current_epoch(store: Store) -> None:
    a, b = fenced(store, "a"), fenced(store, "b")
    a.install(store)
    a.epoch = a.lease.take_over(T0)[0]
    add_node(store, "burst-1")  # a leads: the write commits
    b.epoch = b.lease.take_over(T0 + LEASE_S)[0]

    with pytest.raises(StaleLeader):  # a, paused and woken up after the takeover, tries to act
        with store.session() as session:
            change_status(session, session.get(Node, "burst-1"), NodeStatus.PROVISIONING, "late", T0 + 10)
    with pytest.raises(StaleLeader):
        add_node(store, "burst-2")
    with store.session() as session:  # nothing of either was written
        assert session.get(Node, "burst-1").status == NodeStatus.REQUESTED
        assert session.get(Node, "burst-2") is None
        assert session.scalar(select(func.count()).select_from(NodeHistory)) == 1
        record_event(session, EventKind.LEADER, "leader_lost", "events are not fenced", now=T0 + 11)
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(ScalingEvent)) == 1


class RecordingProvider(Provider):
    """A provider that only records what it was asked (the fence must stop the call before it)."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []

    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        self.calls.append(("launch", tuple(r.node_id for r in requests)))
        return [LaunchResult(r.node_id, True, provider_ref=r.node_id) for r in requests]

    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        self.calls.append(("list", ()))
        return []

    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        self.calls.append(("terminate", tuple(node_ids)))


def collect(actuator: Actuator, count: int) -> list:
    outcomes: list = []
    wait_for(f"{count} actuator outcome(s)", lambda: outcomes.extend(actuator.collect()) or len(outcomes) >= count,
             timeout_s=30, every_s=0.05)
    return outcomes


def test_the_actuator_refuses_provider_calls_under_a_stale_epoch(store: Store, caplog: pytest.LogCaptureFixture) -> None:
    a, b = fenced(store, "a"), fenced(store, "b")
    provider = RecordingProvider()
    actuator = Actuator(None, {"burst": provider}, {"burst": PoolSpec("burst", "demo", 1, 0.0, {})}, guard=a.check)
    try:
        a.epoch = a.lease.take_over(T0)[0]
        actuator.terminate("burst", ["burst-1"])
        assert [o.error for o in collect(actuator, 1)] == [None]
        b.epoch = b.lease.take_over(T0 + LEASE_S)[0]
        with caplog.at_level(logging.INFO, logger="rm.actuator"):
            actuator.terminate("burst", ["burst-2"])
            actuator.list_nodes("burst")
            collected: list = []
            wait_for("the refused calls to finish", lambda: collected.extend(actuator.collect()) or (
                not actuator.in_flight_nodes() and not actuator.busy("list", "burst")), timeout_s=30, every_s=0.05)
            # refused before any provider call: nothing to apply later (a launch refused so must not fail its node)
            assert collected == []
        assert [m for m in caplog.messages if "refused under a stale epoch" in m] == [
            "terminate in pool burst dropped: refused under a stale epoch", "list in pool burst dropped: refused under a stale epoch"]
        with pytest.raises(StaleLeader):
            actuator.terminate_now("burst", ["burst-3"])
        assert provider.calls == [("terminate", ("burst-1",))]  # nothing after the takeover reached it
    finally:
        actuator.close()


def test_a_standby_stores_jobs_and_only_the_current_leader_publishes_them(
    store: Store, redis_url: str, redis_client: redis.Redis,  # noqa: F811 - fixtures
) -> None:
    a, b = fenced(store, "a"), fenced(store, "b")
    roles = {"a": False}
    service = JobService(store, make_app(redis_url), "hatest", registered={"builtin.sleep"},
                         pool_label_sets=[frozenset()], tracker=ActivityTracker(), leading=lambda: roles["a"],
                         guard=a.check)
    queue = queue_for("hatest", ())
    job = {"name": "j", "tasks": [{"name": "s", "run": "builtin.sleep", "args": {"seconds": 0}, "replicate": 3}]}

    job_id = service.submit(job, "alice", T0)  # a is a standby: stored, nothing published
    assert waiting_by_queue(redis_client, [queue]) == {queue: 0}
    a.epoch = a.lease.take_over(T0)[0]
    b.epoch = b.lease.take_over(T0 + LEASE_S)[0]  # ...and b took over before a's tick could publish
    with pytest.raises(StaleLeader, match=f"instance a refuses to publish 3 task\\(s\\) of job {job_id}"):
        service.dispatch_ready(T0 + LEASE_S)
    assert waiting_by_queue(redis_client, [queue]) == {queue: 0}
    with store.session() as session:
        assert set(session.scalars(select(Task.state).where(Task.job_id == job_id))) == {"pending"}

    service.guard = b.check  # the same service as the current leader's: it publishes
    assert service.dispatch_ready(T0 + LEASE_S) == 3
    assert waiting_by_queue(redis_client, [queue]) == {queue: 3}


# -- the elector -------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def leader_events(store: Store) -> list[tuple[str, str]]:
    with store.session() as session:
        return [(e.cause, e.message) for e in session.scalars(
            select(ScalingEvent).where(ScalingEvent.kind == "leader").order_by(ScalingEvent.id))]


def elector(store: Store, holder: str, clock: Clock, cluster: str = "demo", lease_s: float = LEASE_S) -> Elector:
    instance = Lease(store, cluster, holder, lease_s)
    instance.ensure()
    return Elector(instance, Fence(instance), cluster, every_s=1.0, clock=clock)


def test_the_elector_elects_one_then_fails_over_with_events_and_gauge(store: Store) -> None:
    clock = Clock(T0)
    a, b = elector(store, "a", clock, "gauge-test"), elector(store, "b", clock, "gauge-test")
    a.step()
    b.step()
    assert a.leading() and not b.leading()
    assert (a.fence.epoch, b.fence.epoch) == (1, None)
    assert LEADER.labels("gauge-test", "a")._value.get() == 1
    assert LEADER.labels("gauge-test", "b")._value.get() == 0

    clock.now += 2  # a renews within its lease: b still stands by
    a.step()
    b.step()
    assert not b.leading()

    clock.now += LEASE_S + 0.5  # a stopped renewing (paused): b takes over
    b.step()
    assert b.leading() and b.fence.epoch == 2
    a.step()  # a wakes up: its renewal fails, it steps down
    assert not a.leading() and a.fence.epoch is None
    assert LEADER.labels("gauge-test", "a")._value.get() == 0
    assert LEADER.labels("gauge-test", "b")._value.get() == 1

    events = leader_events(store)
    assert [cause for cause, _ in events] == ["leader_elected", "leader_elected", "leader_lost"]
    assert events[0][1] == ("instance a is the leader of cluster gauge-test at epoch 1, the lease was free; "
                            "it runs the controller from its next tick")
    assert events[1][1] == ("instance b is the leader of cluster gauge-test at epoch 2, taking over from instance a "
                            "(epoch 1), whose lease expired 0.5 s ago; it runs the controller from its next tick")
    assert events[2][1] == ("instance a is no longer the leader of cluster gauge-test (epoch 1): instance b took "
                            "the lease at epoch 2; it stops acting and keeps serving the API")


def test_a_stopping_leader_releases_the_lease(store: Store) -> None:
    clock = Clock(T0)
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    a.step()
    a.stop()
    assert not a.leading()
    b.step()  # same instant: the lease was released, not left to expire
    assert b.leading() and b.fence.epoch == 2
    assert "it stopped and released the lease" in leader_events(store)[1][1]


def test_a_leader_that_cannot_reach_the_database_stops_leading_when_its_lease_runs_out(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.upgrade_schema()
    a = elector(store, "a", time.time, lease_s=0.3)
    a.step()
    assert a.leading()
    with store.engine.begin() as connection:  # the lease becomes unreachable: every renewal fails
        connection.execute(text("ALTER TABLE leader_lease RENAME TO leader_lease_gone"))
    a.step()
    assert a.leading()  # within its lease it keeps acting...
    time.sleep(0.35)
    a.step()
    assert not a.leading()  # ...and stops once it would have expired
    store.dispose()


# -- two rmctl up, the leader SIGKILLed (or frozen) mid-job -----------------------------------
@pytest.mark.e2e
@pytest.mark.postgres
@pytest.mark.parametrize("how", ["sigkill", "sigstop"])
def test_the_standby_takes_over_when_the_leader_dies_mid_job(tmp_path: Path, postgres_url: str, how: str) -> None:
    """sigkill: the leader dies. sigstop: it freezes, the standby takes over, then it wakes up and
    must step down without acting (its epoch is stale)."""
    with HaPair(tmp_path, postgres_url) as pair:
        a = pair.start("a")
        wait_for("a to lead", lambda: a.leader()["holder"] == "a" and a.leader()["leading"])
        b = pair.start("b")
        assert {"holder": "a", "leading": False}.items() <= b.leader().items()
        onprem = wait_for("the on-prem node", lambda: [n for n in b.get("/api/v1/nodes") if n["state"] == "idle"])[0]
        refused = b.send("POST", f"/api/v1/nodes/{onprem['id']}/drain")  # a standby holds no drain for anybody
        assert (refused.status_code, refused.json()["detail"]) == (409, (
            f"this instance (b) is a standby and cannot drain node {onprem['id']}; send it to the leader (a)"))
        assert b.send("PUT", "/api/v1/policy", {"policy": {"idle_timeout_s": 5}}).status_code == 409
        assert a.send("PUT", "/api/v1/policy", {"policy": {"idle_timeout_s": 4}}).status_code == 200
        assert 'rm_leader{cluster="demo",instance="b"} 0.0' in b.send("GET", "/metrics").text

        job_id = b.submit("failover", count=16, seconds=3)  # through the standby: stored, the leader publishes
        assert b.send("POST", f"/api/v1/jobs/{job_id}/cancel").status_code == 409, "a cancel is the leader's"
        wait_for("burst nodes booted and running tasks", lambda: [
            n for n in b.get("/api/v1/nodes") if n["pool"] == "burst" and n["state"] == "busy"], timeout_s=90)
        stopped_at = pair.kill("a") if how == "sigkill" else pair.pause("a")

        elected = wait_for("b elected", lambda: [e for e in b.events("leader") if e["cause"] == "leader_elected"
                                                  and e["data"]["holder"] == "b"], timeout_s=30)[0]
        took = epoch(elected["at"]) - stopped_at
        assert took < 3 * LEASE_S, f"b took {took:.1f} s to take over"
        assert "taking over from instance a (epoch 1)" in elected["message"]
        assert {"holder": "b", "epoch": 2, "leading": True}.items() <= b.leader().items()
        assert 'rm_leader{cluster="demo",instance="b"} 1.0' in b.send("GET", "/metrics").text
        assert b.get("/api/v1/policy")["policy"]["idle_timeout_s"] == 4, "the failover undid the admin's change"
        if how == "sigstop":
            pair.resume("a")
            lost = wait_for("a to step down", lambda: [e for e in b.events("leader") if e["cause"] == "leader_lost"],
                            timeout_s=30)[0]
            assert "instance a is no longer the leader of cluster demo (epoch 1): instance b took the lease at " \
                   "epoch 2" in lost["message"]
            assert {"holder": "b", "leading": False}.items() <= a.leader().items()

        done = wait_for("the job to finish", lambda: (j := b.get(f"/api/v1/jobs/{job_id}"))["state"]
                        in ("succeeded", "failed") and j, timeout_s=240)
        assert done["state"] == "succeeded", done
        assert len(done["tasks"]) == 16 and all(t["state"] == "succeeded" for t in done["tasks"])
        wait_for("the burst pool back to 0", lambda: not [n for n in b.get("/api/v1/nodes") if n["pool"] == "burst"],
                 timeout_s=120)
        burst = [n for n in b.get("/api/v1/nodes", all="true") if n["pool"] == "burst"]
        assert len(burst) <= 4, f"a node was launched twice: {[(n['id'], n['state']) for n in burst]}"
        assert pair.peak["burst"] <= 4 and pair.peak["onprem"] <= 1, pair.peak
        assert pair.completions(job_id) == {1: 16}, "a result was recorded twice or never"
        assert b.leader()["epoch"] == 2, "leadership changed hands again"
        for name in [n for n in ("a", "b") if pair.instances[n].alive()]:
            pair.stop(name)  # a standby leaves the nodes alone; the leader destroys its local agents
        assert not [n.id for n in pair.node_rows() if n.status not in ("terminated", "failed", "lost")], \
            "a node was left running"
    assert processes_under(tmp_path) == []


# -- configuration -----------------------------------------------------------------------------
def test_ha_settings_default_to_off_and_three_ticks(demo_yaml_text: str) -> None:
    data = yaml.safe_load(demo_yaml_text)
    config = parse_config(data)
    assert (config.ha.enabled, config.ha.instance_id, config.ha.lease_for(config.policy.tick_s)) == (False, None, 3.0)
    on = parse_config({**data, "policy": {"tick_s": 2}, "ha": {"enabled": True, "instance_id": "rm-a"}})
    assert on.ha.lease_for(on.policy.tick_s) == 6.0


@pytest.mark.parametrize(("ha", "field", "message"), [
    ({"lease_s": 1}, "(top level)", "ha.lease_s (1) must be longer than policy.tick_s (1)"),
    ({"lease_s": 0}, "ha.lease_s", "greater than 0"),
    ({"instance_id": "a b"}, "ha.instance_id", "should match pattern"),
    ({"enabeld": True}, "ha.enabeld", "Extra inputs are not permitted"),
])
def test_bad_ha_settings_are_named(demo_yaml_text: str, ha: dict, field: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({**yaml.safe_load(demo_yaml_text), "ha": ha}, "cluster.yaml")
    assert f"  {field}: " in str(error.value) and message in str(error.value), str(error.value)


def test_an_elector_whose_first_rounds_fail_leads_once_the_database_answers(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/rm.db")  # not upgraded: no lease table yet
    instance = Lease(store, "demo", "a", LEASE_S)
    a = Elector(instance, Fence(instance), "demo", every_s=1.0, clock=Clock(T0))
    a.step()  # the lease table is not there: the round fails, the elector lives on
    assert not a.leading()
    store.upgrade_schema()
    a.step()
    assert a.leading() and a.fence.epoch == 1
    store.dispose()
