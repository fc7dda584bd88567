"""Placement queues and demand measurement.

Why one queue per label set: a task asking for labels L may run only on pools carrying all of
L, so it is published to the queue named after L, and an agent of a pool with labels P
consumes the queue of every subset of P. Celery routing then enforces placement, and the
length of each queue is the demand of its label set: an on-prem-only backlog is visible as
such and never launches a cloud node.

Demand = waiting messages (every priority sub-queue kombu keeps) + tasks reserved or running
on workers. Queue length alone under-counts: prefetched and running tasks have left the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import combinations

import redis

from policies.snapshot import Demand, LabelSet

PRIORITY_STEPS = (0, 3, 6, 9)  # kombu's Redis defaults
PRIORITY_SEP = "\x06\x16"


def queue_for(cluster: str, labels: Iterable[str]) -> str:
    """``rm.<cluster>`` for tasks with no constraint, ``rm.<cluster>.<l1+l2>`` otherwise.

    The unconstrained queue has no suffix at all, so no label name can ever collide with it.
    """
    names = "+".join(sorted(set(labels)))
    return f"rm.{cluster}.{names}" if names else f"rm.{cluster}"


def is_cluster_queue(cluster: str, queue: str) -> bool:
    return queue == f"rm.{cluster}" or queue.startswith(f"rm.{cluster}.")


def labels_of(cluster: str, queue: str) -> LabelSet:
    if not is_cluster_queue(cluster, queue):
        raise ValueError(f"{queue!r} is not a placement queue of cluster {cluster!r}")
    tail = queue[len(f"rm.{cluster}."):]
    return frozenset(tail.split("+")) if tail else frozenset()


def label_subsets(labels: Iterable[str]) -> list[LabelSet]:
    items = sorted(set(labels))
    return [frozenset(c) for size in range(len(items) + 1) for c in combinations(items, size)]


def queues_for_pool(cluster: str, pool_labels: Iterable[str]) -> tuple[str, ...]:
    return tuple(queue_for(cluster, subset) for subset in label_subsets(pool_labels))


def priority_queue_names(queue: str) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEP}{step}" for step in PRIORITY_STEPS]


def waiting_by_queue(client: redis.Redis, queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue, summed over its priority sub-queues (one round trip)."""
    queues = list(queues)
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for name in priority_queue_names(queue):
            pipe.llen(name)
    sizes = pipe.execute()
    steps = len(PRIORITY_STEPS)
    return {queue: sum(sizes[i * steps:(i + 1) * steps]) for i, queue in enumerate(queues)}


def build_demand(
    cluster: str, waiting: Mapping[str, int], in_flight: Mapping[LabelSet, int]
) -> tuple[Demand, ...]:
    """Join broker waiting counts and worker in-flight counts per label set."""
    by_labels: dict[LabelSet, list[int]] = {}
    for queue, count in waiting.items():
        by_labels.setdefault(labels_of(cluster, queue), [0, 0])[0] += count
    for labels, count in in_flight.items():
        by_labels.setdefault(labels, [0, 0])[1] += count
    return tuple(
        Demand(labels=labels, waiting=w, in_flight=f)
        for labels, (w, f) in sorted(by_labels.items(), key=lambda item: sorted(item[0]))
        if w or f
    )
