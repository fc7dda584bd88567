"""Placement queue naming and demand measurement against a real Redis and real Celery messages."""

from __future__ import annotations

from collections import Counter

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st

from agents.app import make_app
from policies.snapshot import Demand
from rm.config import LABEL_PATTERN, MAX_LABELS_PER_POOL
from rm.demand import (
    PRIORITY_SEP,
    build_demand,
    is_cluster_queue,
    label_subsets,
    labels_of,
    queue_for,
    queues_for_pool,
    waiting_by_queue,
)
from tests.helpers import redis_client, redis_url  # noqa: F401 - fixtures

# Labels and cluster names exactly as the config accepts them.
labels_st = st.from_regex(LABEL_PATTERN, fullmatch=True)
clusters_st = st.from_regex(r"^[a-z][a-z0-9-]{0,30}$", fullmatch=True)
label_sets_st = st.frozensets(labels_st, max_size=MAX_LABELS_PER_POOL)


# -- naming --------------------------------------------------------------------------------------
@given(cluster=clusters_st, labels=label_sets_st)
def test_queue_name_round_trips_to_its_label_set(cluster: str, labels: frozenset[str]) -> None:
    queue = queue_for(cluster, labels)
    assert is_cluster_queue(cluster, queue)
    assert labels_of(cluster, queue) == labels


@given(cluster=clusters_st, labels=label_sets_st)
def test_queue_name_ignores_order_and_duplicates(cluster: str, labels: frozenset[str]) -> None:
    ordered = sorted(labels)
    assert queue_for(cluster, ordered) == queue_for(cluster, list(reversed(ordered)) + ordered)


@given(cluster=clusters_st, a=label_sets_st, b=label_sets_st)
def test_distinct_label_sets_get_distinct_queues(cluster: str, a: frozenset[str], b: frozenset[str]) -> None:
    assert (queue_for(cluster, a) == queue_for(cluster, b)) == (a == b)


def test_empty_label_set_has_the_bare_cluster_queue() -> None:
    assert queue_for("demo", []) == "rm.demo"
    assert labels_of("demo", "rm.demo") == frozenset()
    assert queue_for("demo", ["gpu", "onprem"]) == "rm.demo.gpu+onprem"


def test_label_named_any_does_not_collide_with_the_unconstrained_queue() -> None:
    assert LABEL_PATTERN.match("any")  # the config accepts it
    assert queue_for("demo", {"any"}) != queue_for("demo", set())
    assert labels_of("demo", queue_for("demo", {"any"})) == frozenset({"any"})


def test_labels_of_rejects_a_queue_of_another_cluster() -> None:
    with pytest.raises(ValueError):
        labels_of("demo", queue_for("other", {"gpu"}))
    with pytest.raises(ValueError):
        labels_of("demo", "celery")


@given(cluster=clusters_st, labels=label_sets_st)
def test_pool_consumes_one_queue_per_subset_of_its_labels(cluster: str, labels: frozenset[str]) -> None:
    queues = queues_for_pool(cluster, labels)
    assert len(queues) == 2 ** len(labels)
    assert len(set(queues)) == len(queues)
    assert {labels_of(cluster, q) for q in queues} == set(label_subsets(labels))
    assert queue_for(cluster, ()) in queues  # every pool takes unconstrained work
    assert queue_for(cluster, labels) in queues  # and work needing exactly its labels
    for q in queues:
        assert labels_of(cluster, q) <= labels  # never work needing a label it lacks


def test_pool_queues_concrete_example() -> None:
    assert set(queues_for_pool("demo", ["onprem", "gpu"])) == {
        "rm.demo", "rm.demo.gpu", "rm.demo.onprem", "rm.demo.gpu+onprem",
    }


# -- waiting messages in a real broker -----------------------------------------------------------
def test_waiting_counts_every_priority_sub_queue_of_real_celery_messages(
    redis_url: str, redis_client: redis.Redis,  # noqa: F811
) -> None:
    app = make_app(redis_url)
    queues = [queue_for("demo", ()), queue_for("demo", {"gpu"}), queue_for("demo", {"gpu", "onprem"})]
    sent: Counter[str] = Counter()
    for i, queue in enumerate(queues):
        for priority in range(10):
            for _ in range(i + 1):  # 10, 20, 30 messages: a swapped count cannot pass
                app.send_task("builtin.sleep", kwargs={"seconds": 1}, queue=queue, priority=priority)
                sent[queue] += 1
    app.close()

    keys = {key.decode() for key in redis_client.keys("rm.demo*")}
    sub_queues = {key for key in keys if PRIORITY_SEP in key}
    assert sub_queues, f"no message landed in a priority sub-queue; keys: {sorted(keys)!r}"
    for queue in queues:
        # the base list holds priorities 0-2 only, so the base length alone must under-count
        assert redis_client.llen(queue) < sent[queue]
        assert f"{queue}{PRIORITY_SEP}9" in sub_queues

    unknown = queue_for("demo", {"never-used"})
    assert waiting_by_queue(redis_client, [*queues, unknown]) == {**sent, unknown: 0}
    assert waiting_by_queue(redis_client, []) == {}


def test_waiting_counts_drop_as_messages_are_consumed(
    redis_url: str, redis_client: redis.Redis,  # noqa: F811
) -> None:
    app = make_app(redis_url)
    queue = queue_for("demo", {"onprem"})
    for priority in (0, 4, 9):
        app.send_task("builtin.echo", kwargs={"p": priority}, queue=queue, priority=priority)
    app.close()
    assert waiting_by_queue(redis_client, [queue]) == {queue: 3}
    key = next(k for k in redis_client.keys(f"{queue}*") if PRIORITY_SEP.encode() in k)
    redis_client.rpop(key)  # a consumer takes one message from a sub-queue
    assert waiting_by_queue(redis_client, [queue]) == {queue: 2}


# -- joining waiting and in-flight ---------------------------------------------------------------
def test_build_demand_merges_waiting_and_in_flight_per_label_set_and_drops_zeros() -> None:
    gpu, onprem = frozenset({"gpu"}), frozenset({"onprem"})
    both, none = gpu | onprem, frozenset()
    waiting = {
        queue_for("demo", ()): 3,
        queue_for("demo", gpu): 0,  # nothing waiting, nothing running: dropped
        queue_for("demo", onprem): 2,
        queue_for("demo", both): 0,
    }
    in_flight = {onprem: 1, both: 4, frozenset({"cloud"}): 0}
    demand = build_demand("demo", waiting, in_flight)
    assert set(demand) == {
        Demand(labels=none, waiting=3, in_flight=0),
        Demand(labels=onprem, waiting=2, in_flight=1),
        Demand(labels=both, waiting=0, in_flight=4),
    }
    assert len(demand) == 3  # one entry per label set
    assert all(d.total > 0 for d in demand)


def test_build_demand_of_nothing_is_empty() -> None:
    assert build_demand("demo", {queue_for("demo", ()): 0}, {}) == ()


@given(
    waiting=st.dictionaries(label_sets_st, st.integers(0, 50), max_size=6),
    in_flight=st.dictionaries(label_sets_st, st.integers(0, 50), max_size=6),
)
def test_build_demand_conserves_every_task(waiting: dict, in_flight: dict) -> None:
    demand = build_demand("demo", {queue_for("demo", k): v for k, v in waiting.items()}, in_flight)
    assert sum(d.waiting for d in demand) == sum(waiting.values())
    assert sum(d.in_flight for d in demand) == sum(in_flight.values())
    assert len({d.labels for d in demand}) == len(demand)
    for d in demand:
        assert d.total > 0
        assert d.waiting == waiting.get(d.labels, 0)
        assert d.in_flight == in_flight.get(d.labels, 0)
