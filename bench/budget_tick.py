"""What the budget costs the controller each tick, as the month's ledger grows.

Every tick the controller computes each budget's spent, committed and burn rate from the ledger
(``rm.budget.budget_views``), summing closed entries once into a ``BudgetCache`` and re-reading only
open ones and those closed since. This bench fills a fresh SQLite store with N closed entries spread
over the current month plus 100 live ones, and times ``budget_views`` for a global monthly budget and a
daily pool budget: ``cold_ms`` (first tick after a start: every entry of the period is read) and
``tick_ms`` (median of 5 later ticks, cache warm). Prints JSON.

Usage: python bench/budget_tick.py [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from rm.budget import BudgetCache, budget_views, period_bounds  # noqa: E402
from rm.config import parse_config  # noqa: E402
from rm.models import LedgerEntry, Node  # noqa: E402
from rm.store import Store  # noqa: E402

CONFIG = parse_config({
    "cluster": "bench", "currency": "EUR",
    "pools": [{"name": "onprem", "provider": "local", "max_nodes": 10},
              {"name": "burst", "provider": "local", "max_nodes": 1000, "price_per_hour": "0.40",
               "billing": {"granularity": "hour"}}],
    "budgets": {"global": {"period": "month", "amount": "100000"},
                "pools": {"burst": {"period": "day", "amount": "5000"}}},
}, "bench")


def fill(store: Store, closed: int, now: float) -> None:
    start, _ = period_bounds("month", now)
    rng = random.Random(7)
    nodes, entries = [], []
    for i in range(closed + 100):
        began = rng.uniform(start, now - 60)
        ended = None if i >= closed else min(now, began + rng.uniform(60, 7200))
        billed = None if ended is None else int(-(-(ended - began) // 3600) * 3600)
        node_id = f"burst-{i:07d}"
        nodes.append({"id": node_id, "cluster": "bench", "pool": "burst", "provider": "local", "slots": 2,
                      "status": "terminated" if ended else "idle", "status_reason": "", "labels": [],
                      "created_at": began, "updated_at": ended or began, "extra": {}})
        entries.append({"node_id": node_id, "pool": "burst", "provider": "local", "currency": "EUR",
                        "price_per_hour": Decimal("0.40"), "unit_s": 3600, "minimum_s": 0, "slots": 2,
                        "started_at": began, "ended_at": ended, "billed_s": billed,
                        "cost": None if billed is None else Decimal("0.40") * billed / 3600})
    with store.session() as session:
        session.execute(insert(Node), nodes)
        session.execute(insert(LedgerEntry), entries)


def measure(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        store.upgrade_schema()
        now = time.time()
        fill(store, size, now)
        cache, timings = BudgetCache(), []
        for tick in range(6):
            with store.session() as session:
                started = time.perf_counter()
                budget_views(session, CONFIG, now + tick, cache)
                timings.append((time.perf_counter() - started) * 1000)
        store.dispose()
        return {"cold_ms": round(timings[0], 1), "tick_ms": round(statistics.median(timings[1:]), 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print(json.dumps({"benchmark": "budget_tick", "by_ledger_entries": {s: measure(s) for s in sizes}},
                     indent=2))
