"""Run a measurement several times and print its figures as JSON: medians, and every run.

Why one runner: every bench reports the same way (numbers as medians, yes/no checks as
"all runs"), so the figures quoted in the README are read the same way everywhere.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from typing import Any

from rm.logs import setup_logging


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each numeric figure (runs without it ignored); ``all()`` of each yes/no figure."""
    summary: dict[str, Any] = {}
    for key in runs[0]:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values and all(isinstance(v, bool) for v in values):
            summary[key] = all(values)
        elif values:
            summary[key] = statistics.median(values)
    return summary


def main(name: str, doc: str, one_run: Callable[[], dict[str, Any]], default_runs: int = 1) -> None:
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--runs", type=int, default=default_runs)
    args = parser.parse_args()
    setup_logging(level="WARNING")
    runs = [one_run() for _ in range(args.runs)]
    print(json.dumps({"benchmark": name, "runs": args.runs, "median": summarize(runs), "each": runs}, indent=2))
