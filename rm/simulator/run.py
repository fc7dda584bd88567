"""One simulation: a workload, a policy and a configuration in; metrics and a timeline out.

Why the loop looks like the controller's: every tick observes (nodes, demand, budgets from the
ledger), decides with the production :func:`policies.load_factor.decide` (budget gate included)
or a baseline, acts, and moves the removal streaks on with :func:`rm.controller.next_streaks`.
Between ticks the event heap runs arrivals, boots and task completions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from policies.load_factor import decide
from policies.snapshot import BudgetView, Demand, Snapshot
from rm.budget import period_bounds
from rm.controller import next_streaks, pool_views
from rm.simulator import POLICIES
from rm.simulator.baselines import Baseline, make_baseline
from rm.simulator.cluster import SimCluster
from rm.simulator.engine import Engine
from rm.simulator.metrics import RunMetrics, cost_ratio, weighted_percentiles
from rm.simulator.provider import SimProvider
from rm.simulator.settings import SimulationSettings
from rm.simulator.workload import Workload

Progress = Callable[[int, int], None]


@dataclass
class Timeline:
    """One sample per tick, for the report's plots."""

    t: list[float] = field(default_factory=list)  # seconds since the start
    queued: list[int] = field(default_factory=list)
    running: list[int] = field(default_factory=list)
    nodes: dict[str, list[int]] = field(default_factory=dict)
    oldest_wait: list[float] = field(default_factory=list)
    spend: list[float] = field(default_factory=list)


@dataclass
class RunResult:
    metrics: RunMetrics
    timeline: Timeline


def default_policy(settings: SimulationSettings) -> Baseline:
    """Ours: the production decide at the configured tick."""
    return Baseline("default", settings.cluster.policy.tick_s, decide)


def policy_named(name: str, settings: SimulationSettings) -> Baseline:
    return default_policy(settings) if name == "default" else make_baseline(name)


class Simulation:
    def __init__(self, settings: SimulationSettings, workload: Workload, policy: Baseline, seed: int = 0) -> None:
        self.settings, self.workload, self.policy = settings, workload, policy
        self.config = settings.cluster
        self.start = settings.start_epoch
        self.engine = Engine(now=self.start)
        rngs = np.random.default_rng(seed).spawn(len(self.config.pools))
        providers = {p.name: SimProvider(settings.provider(p.name), rng) for p, rng in zip(self.config.pools, rngs)}
        terminate_s = {p.name: settings.provider(p.name).terminate_s for p in self.config.pools}
        self.cluster = SimCluster(self.config, providers, self.engine, terminate_s)
        self.streaks: dict[str, int] = {}
        self.timeline = Timeline(nodes={p.name: [] for p in self.config.pools})
        self.ticks = 0
        self.violations: set[tuple[str, str, float]] = set()
        self.stopped = False

    # -- the loop --------------------------------------------------------------------------
    def run(self, progress: Progress | None = None) -> RunResult:
        for batch in self.workload.batches:
            self.engine.at(self.start + batch.submit, self.cluster.submit, batch)
        self.engine.at(self.start, self._tick, progress)
        horizon = self.start + self.settings.simulation.horizon_s
        self.engine.run_until(horizon, lambda: not self.stopped)
        self.cluster.finish()
        return RunResult(self._metrics(), self.timeline)

    def _tick(self, progress: Progress | None) -> None:
        now = self.engine.now
        budgets = self.cluster.ledger.budget_views(now)
        self._note_violations(budgets)
        snapshot = Snapshot(pools=pool_views(self.config, self.cluster.nodes.values(), self.streaks,
                                             self.cluster.backoff_until, now, self.cluster.views),
                            demand=self._demand(), budgets=budgets)
        decision = self.policy.decide(snapshot, self.config.policy, now)
        self.cluster.apply(decision)
        self.streaks = next_streaks(decision, self.streaks)
        self.ticks += 1
        self._sample(now, snapshot)
        if progress:
            progress(self.cluster.done, self.workload.tasks)
        if self._finished(now):
            self.stopped = True
        else:
            self.engine.after(self.policy.interval_s, self._tick, progress)

    def _demand(self) -> tuple[Demand, ...]:
        labels = set(self.cluster.queued) | set(self.cluster.running)
        return tuple(Demand(labels=l, waiting=self.cluster.queued.get(l, 0), in_flight=self.cluster.running.get(l, 0))
                     for l in sorted(labels, key=sorted))

    def _note_violations(self, budgets: tuple[BudgetView, ...]) -> None:
        """A budget passed: money spent in its period above its amount, or the burn rate above its cap.

        Counted once per budget, kind and period (a run in one month breaches each at most once).
        """
        for view in budgets:
            period = period_bounds(view.period, self.engine.now)[0]
            if view.amount is not None and view.spent > view.amount:
                self.violations.add((view.scope, "amount", period))
            if view.max_burn_per_hour is not None and view.burn_per_hour > view.max_burn_per_hour:
                self.violations.add((view.scope, "burn", period))

    def _finished(self, now: float) -> bool:
        """All tasks done, and the policy had its tail to give nodes back (or keeps them by design)."""
        if self.cluster.done < self.workload.tasks or now < self.start + self.workload.batches[-1].submit:
            return False
        if self.policy.keeps_nodes:
            return True
        settled = all(n <= self.config.pool(p).min_nodes for p, n in self.cluster.nodes_per_pool().items())
        return settled or now - self.cluster.last_done_at >= self.settings.simulation.tail_s

    def _sample(self, now: float, snapshot: Snapshot) -> None:
        line = self.timeline
        line.t.append(now - self.start)
        line.queued.append(self.cluster.queued_total())
        line.running.append(self.cluster._busy)
        for pool in snapshot.pools:  # the live nodes when the tick began, launches of this tick not yet in
            line.nodes[pool.name].append(len(pool.nodes))
        line.oldest_wait.append(self.cluster.oldest_wait())
        line.spend.append(self.cluster.ledger.spend_estimate(now))

    # -- results ---------------------------------------------------------------------------
    def _metrics(self) -> RunMetrics:
        cluster, ledger = self.cluster, self.cluster.ledger
        self._note_violations(ledger.budget_views(self.engine.now))
        p50, p95, p99 = weighted_percentiles(cluster.waits, cluster.wait_counts, (0.50, 0.95, 0.99))
        cost = float(ledger.total_cost())
        slot_s = ledger.slot_seconds()
        first = self.start + (self.workload.batches[0].submit if self.workload.batches else 0.0)
        return RunMetrics(
            workload=self.workload.name, policy=self.policy.name, tasks=self.workload.tasks, tasks_done=cluster.done,
            total_cost=round(cost, 4), currency=self.config.currency, lower_bound=round(cluster.bound.total, 4),
            cost_over_bound=_round(cost_ratio(cost, cluster.bound.total)),
            node_hours=round(ledger.node_seconds() / 3600, 3),
            utilization=round(cluster.busy_slot_s / slot_s, 4) if slot_s else 0.0,
            wait_p50_s=round(p50, 1), wait_p95_s=round(p95, 1), wait_p99_s=round(p99, 1),
            makespan_s=round(max(cluster.last_done_at - first, 0.0), 1),
            launches=cluster.launches, releases=cluster.releases, launch_failures=cluster.launch_failures,
            peak_nodes=cluster.peak_nodes, budget_violations=len(self.violations),
            simulated_s=round(self.engine.now - self.start, 1), ticks=self.ticks, events=self.engine.processed,
        )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def simulate(settings: SimulationSettings, workload: Workload, policy: str = "default", seed: int = 0,
             progress: Progress | None = None) -> RunResult:
    """Run ``workload`` under ``policy`` (``default`` or a baseline name) on ``settings``."""
    if policy not in POLICIES:
        raise ValueError(f"unknown policy {policy!r}; known: {', '.join(POLICIES)}")
    return Simulation(settings, workload, policy_named(policy, settings), seed).run(progress)
