"""What a run is judged by: money, capacity used, how long tasks waited, churn, budget breaches.

Why weighted percentiles: a wait is recorded once per assignment of ``count`` tasks (tasks live
in batches), so the percentile of task waits weighs each sample by its count.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class RunMetrics:
    workload: str
    policy: str
    tasks: int
    tasks_done: int
    total_cost: float
    currency: str
    lower_bound: float
    cost_over_bound: float | None  # None when the bound is 0 (everything fits on free pools)
    node_hours: float
    utilization: float  # busy slot-seconds / provisioned slot-seconds
    wait_p50_s: float
    wait_p95_s: float
    wait_p99_s: float
    makespan_s: float
    launches: int
    releases: int
    launch_failures: int
    peak_nodes: int
    budget_violations: int
    simulated_s: float
    ticks: int
    events: int

    def as_dict(self) -> dict:
        return asdict(self)


def weighted_percentiles(values: list[float], weights: list[int], quantiles: tuple[float, ...]) -> list[float]:
    """Percentiles of ``values`` each repeated ``weights`` times, without repeating them."""
    if not values:
        return [0.0 for _ in quantiles]
    order = np.argsort(values, kind="stable")
    sorted_values = np.asarray(values, dtype=float)[order]
    cumulative = np.cumsum(np.asarray(weights, dtype=float)[order])
    total = cumulative[-1]
    return [float(sorted_values[min(np.searchsorted(cumulative, q * total), len(sorted_values) - 1)])
            for q in quantiles]


def cost_ratio(cost: float, bound: float) -> float | None:
    """cost / bound; with a zero bound, 1.0 if nothing was paid either, else undefined."""
    if bound > 0:
        return cost / bound
    return 1.0 if cost == 0 else None
