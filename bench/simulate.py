"""The simulator's figures: every policy on every built-in workload, and the million-task scale run.

Prints JSON: ``comparison`` (one row per workload x policy on config/simulation/default.yaml: cost,
cost / lower bound, p95 wait, churn, budget breaches) and ``scale`` (1,000,000 burst tasks on
config/simulation/scale.yaml, up to 10,200 nodes: wall seconds, peak RSS of this process, cost /
bound), and ``default_idle_timeout_60s`` (ours again with ``idle_timeout_s`` 60 instead of the
file's 300: what the release delay costs). With ``--docs DIR`` it also writes the comparison table and chart and the burst run's
report there (the README's pictures live in docs/sim/).

Usage: python bench/simulate.py [--seed 0] [--scale-tasks 1000000] [--docs docs/sim] [--skip-scale | --only-scale]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from rm.simulator.compare import compare, rows, write_comparison  # noqa: E402
from rm.simulator.report import write_run  # noqa: E402
from rm.simulator.run import simulate  # noqa: E402
from rm.simulator.settings import load_simulation  # noqa: E402
from rm.simulator.workload import make_workload  # noqa: E402

SCALE_CONFIG = ROOT / "config" / "simulation" / "scale.yaml"


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def scale_run(tasks: int, seed: int) -> dict:
    started = time.perf_counter()
    settings = load_simulation(SCALE_CONFIG)
    workload = make_workload("burst", tasks, seed)
    metrics = simulate(settings, workload, "default", seed).metrics
    return {"wall_s": round(time.perf_counter() - started, 2), "peak_rss_mib": peak_rss_mib(),
            **{k: getattr(metrics, k) for k in ("tasks", "tasks_done", "peak_nodes", "ticks", "events", "total_cost",
                                                "cost_over_bound", "wait_p95_s", "makespan_s", "utilization")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale-tasks", type=int, default=1_000_000)
    parser.add_argument("--docs", type=Path, default=None)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--only-scale", action="store_true", help="the scale run alone (its peak RSS is its own)")
    args = parser.parse_args()
    if args.only_scale:
        print(json.dumps({"scale": scale_run(args.scale_tasks, args.seed)}, indent=2))
        return
    settings = load_simulation()
    started = time.perf_counter()
    results = compare(settings, seed=args.seed)
    out = {"comparison_wall_s": round(time.perf_counter() - started, 1), "comparison": rows(results)}
    out["default_idle_timeout_60s"] = rows(compare(settings.with_policy(idle_timeout_s=60), policies=["default"],
                                                   seed=args.seed))
    if args.docs:
        write_comparison(results, args.docs)
        write_run(simulate(settings, make_workload("burst", None, args.seed), "default", args.seed), args.docs)
    if not args.skip_scale:  # last; the peak RSS then covers the comparison too (--only-scale for its own)
        out["scale"] = scale_run(args.scale_tasks, args.seed)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
