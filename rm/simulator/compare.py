"""Every policy on every workload: the table and the cost-versus-wait chart the README quotes.

Why the same seed for every policy on a workload: the tasks, boot times and launch failures
they face are then the same draws, so a difference in cost or wait is the policy's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from rm.simulator.metrics import RunMetrics  # noqa: E402
from rm.simulator.report import save_figure  # noqa: E402
from rm.simulator.run import POLICIES, simulate  # noqa: E402
from rm.simulator.settings import SimulationSettings  # noqa: E402
from rm.simulator.workload import GENERATORS, make_workload  # noqa: E402

COLUMNS = ("workload", "policy", "total_cost", "cost_over_bound", "wait_p95_s", "launches", "releases",
           "utilization", "budget_violations")


def compare(settings: SimulationSettings, workloads: Sequence[str] = tuple(GENERATORS),
            policies: Sequence[str] = POLICIES, seed: int = 0, tasks: int | None = None,
            on_run: Callable[[RunMetrics], None] | None = None) -> list[RunMetrics]:
    results = []
    for name in workloads:
        workload = make_workload(name, tasks, seed)
        for policy in policies:
            metrics = simulate(settings, workload, policy, seed).metrics
            results.append(metrics)
            if on_run:
                on_run(metrics)
    return results


def rows(results: Sequence[RunMetrics]) -> list[dict]:
    return [{c: getattr(m, c) for c in COLUMNS} for m in results]


def markdown_table(results: Sequence[RunMetrics]) -> str:
    head = "| workload | policy | cost | cost / bound | p95 wait (s) | launches / releases | utilization | budget breaches |"
    lines = [head, "|" + "---|" * 8]
    for m in results:
        ratio = "n/a" if m.cost_over_bound is None else f"{m.cost_over_bound:.2f}"
        lines.append(f"| {m.workload} | {m.policy} | {m.total_cost:.2f} {m.currency} | {ratio} | {m.wait_p95_s:.0f} | "
                     f"{m.launches} / {m.releases} | {m.utilization:.0%} | {m.budget_violations} |")
    return "\n".join(lines)


def plot_cost_vs_wait(results: Sequence[RunMetrics], path: Path) -> Path:
    workloads = sorted({m.workload for m in results})
    fig, axes = plt.subplots(1, len(workloads), figsize=(5 * len(workloads), 4.5), squeeze=False)
    for ax, workload in zip(axes[0], workloads):
        for m in (m for m in results if m.workload == workload):
            ax.scatter(m.wait_p95_s / 60, m.total_cost, s=60, marker="*" if m.policy == "default" else "o")
            ax.annotate(m.policy, (m.wait_p95_s / 60, m.total_cost), textcoords="offset points", xytext=(5, 5))
        ax.set_xscale("symlog", linthresh=1.0)  # onprem-only waits hours, the rest minutes
        ax.set_yscale("symlog", linthresh=1.0)  # static costs tens of times the others, onprem nothing
        ax.set_title(workload)
        ax.set_xlabel("p95 queue wait (minutes)")
        ax.set_ylabel(f"total cost ({results[0].currency})")
    return save_figure(fig, "cost versus wait: lower left is better", path)


def write_comparison(results: Sequence[RunMetrics], out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    table = out / "comparison.md"
    table.write_text(markdown_table(results) + "\n")
    data = out / "comparison.json"
    data.write_text(json.dumps([m.as_dict() for m in results], indent=2) + "\n")
    return {"table": table, "json": data, "png": plot_cost_vs_wait(results, out / "cost_vs_wait.png")}
