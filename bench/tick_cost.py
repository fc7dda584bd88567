"""What one controller tick costs at 100, 1,000 and 10,000 nodes with 1,000,000 queued tasks.

Two halves, timed apart on a fresh SQLite store holding N busy priced nodes (each with its open
ledger entry) plus 10 on-prem nodes, a global monthly budget and 1,000,000 tasks waiting:

- ``decide_ms``: the pure policy, :func:`policies.load_factor.decide` on the snapshot (budget gate
  included). This is what the simulator runs every simulated tick. ``decide_idle_ms``: the same
  nodes all idle past their timeout with nothing queued (the release path: every node a candidate).
- ``store_ms``: the store half of a real tick, in one session as ``Controller.tick`` does it:
  load the live nodes (``NodeKeeper.live_nodes``, three times like the tick), the budgets from the ledger
  (``rm.budget.budget_views`` with the tick-to-tick cache, then ``record_alerts``), and the
  snapshot (``rm.controller.pool_views``), committed. Its parts are reported too:
  ``load_nodes_ms``, ``budgets_ms``, ``snapshot_ms``.

Medians of 5 ticks after a first (cold) one. Prints JSON.

Usage: python bench/tick_cost.py [--sizes 100,1000,10000]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from policies.load_factor import decide  # noqa: E402
from policies.snapshot import Demand, Snapshot  # noqa: E402
from rm.budget import BudgetCache, budget_views, record_alerts  # noqa: E402
from rm.config import parse_config  # noqa: E402
from rm.controller import pool_views  # noqa: E402
from rm.models import LedgerEntry, Node  # noqa: E402
from rm.nodes import NodeKeeper  # noqa: E402
from rm.store import Store  # noqa: E402

QUEUED = 1_000_000
LIVE_NODE_READS = 3  # Controller.tick reads the live nodes three times (before, after drains, for the counts)


def config_for(nodes: int):
    return parse_config({
        "cluster": "bench", "currency": "EUR", "policy": {"max_launch_per_tick": 1000},
        "pools": [{"name": "onprem", "provider": "local", "slots": 8, "min_nodes": 10, "max_nodes": 10},
                  {"name": "cloud", "provider": "local", "slots": 4, "max_nodes": nodes + 1000,
                   "price_per_hour": "0.20"}],
        "budgets": {"global": {"period": "month", "amount": "1000000"}},
    }, "bench")


def fill(store: Store, nodes: int, now: float) -> None:
    rows, entries = [], []
    for pool, count, slots, price in (("onprem", 10, 8, Decimal(0)), ("cloud", nodes, 4, Decimal("0.20"))):
        for i in range(count):
            node_id = f"{pool}-{i:07d}"
            rows.append({"id": node_id, "cluster": "bench", "pool": pool, "provider": "local", "slots": slots,
                         "status": "busy", "status_reason": "", "labels": [], "running_tasks": slots,
                         "created_at": now - 600, "updated_at": now - 600, "extra": {}})
            entries.append({"node_id": node_id, "pool": pool, "provider": "local", "currency": "EUR",
                            "price_per_hour": price, "unit_s": 1, "minimum_s": 60, "slots": slots,
                            "started_at": now - 600})
    with store.session() as session:
        session.execute(insert(Node), rows)
        session.execute(insert(LedgerEntry), entries)


def one_tick(store: Store, config, cache: BudgetCache, now: float) -> tuple[dict[str, float], Snapshot]:
    ms = {}
    started = time.perf_counter()
    with store.session() as session:
        mark = time.perf_counter()
        for _ in range(LIVE_NODE_READS):
            nodes = NodeKeeper.live_nodes(session)
        ms["load_nodes_ms"] = (time.perf_counter() - mark) * 1000
        mark = time.perf_counter()
        budgets = budget_views(session, config, now, cache)
        record_alerts(session, config, budgets, now)
        ms["budgets_ms"] = (time.perf_counter() - mark) * 1000
        mark = time.perf_counter()
        running = sum(n.running_tasks for n in nodes)
        snapshot = Snapshot(pools=pool_views(config, nodes, {}, lambda pool: 0.0, now),
                            demand=(Demand(frozenset(), waiting=QUEUED, in_flight=running),), budgets=budgets)
        ms["snapshot_ms"] = (time.perf_counter() - mark) * 1000
    ms["store_ms"] = (time.perf_counter() - started) * 1000
    return ms, snapshot


def measure(nodes: int) -> dict[str, float]:
    config = config_for(nodes)
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        store.upgrade_schema()
        now = time.time()
        fill(store, nodes, now)
        cache = BudgetCache()
        ticks = [one_tick(store, config, cache, now + i) for i in range(6)]
        store.dispose()
    snapshot = ticks[-1][1]
    decide_ms = []
    for i in range(6):
        mark = time.perf_counter()
        decision = decide(snapshot, config.policy, now + i)
        decide_ms.append((time.perf_counter() - mark) * 1000)
    idle = Snapshot(pools=tuple(replace(p, nodes=tuple(replace(n, status="idle", running_tasks=0, idle_since=now - 3600,
                                                                 removal_streak=5) for n in p.nodes))
                                for p in snapshot.pools), budgets=snapshot.budgets)
    idle_ms = []
    for i in range(6):
        mark = time.perf_counter()
        decide(idle, config.policy, now + i)
        idle_ms.append((time.perf_counter() - mark) * 1000)
    warm = [t for t, _ in ticks[1:]]
    out = {key: round(statistics.median(t[key] for t in warm), 1) for key in warm[0]}
    out["cold_store_ms"] = round(ticks[0][0]["store_ms"], 1)
    out["decide_ms"] = round(statistics.median(decide_ms[1:]), 2)
    out["decide_idle_ms"] = round(statistics.median(idle_ms[1:]), 2)
    out["launches"] = sum(launch.count for launch in decision.launches)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100,1000,10000")
    sizes = [int(s) for s in parser.parse_args().sizes.split(",")]
    print(json.dumps({"benchmark": "tick_cost", "queued_tasks": QUEUED,
                      "by_nodes": {size: measure(size) for size in sizes}}, indent=2))
