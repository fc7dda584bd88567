"""The simulator: its clock, its workloads, and the invariants of a run that drives the production decide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rm.config import ConfigError
from rm.simulator import WORKLOADS
from rm.simulator.engine import Engine
from rm.simulator.run import simulate
from rm.simulator.settings import load_simulation, parse_simulation
from rm.simulator.workload import GENERATORS, Batch, Workload, WorkloadError, burst, diurnal, load_trace, make_workload, spiky
from tests.sim_support import sim_settings

REPO = Path(__file__).resolve().parents[1]


# -- the clock -----------------------------------------------------------------------------
def test_events_run_in_time_order_and_ties_in_scheduling_order() -> None:
    engine, seen = Engine(), []
    engine.at(5.0, seen.append, "b")
    engine.at(1.0, seen.append, "a")
    engine.at(5.0, seen.append, "c")
    engine.at(9.0, seen.append, "late")
    engine.run_until(6.0)
    assert seen == ["a", "b", "c"] and engine.now == 5.0
    engine.at(2.0, seen.append, "past")  # never scheduled in the past: runs now
    engine.run_until(100.0)
    assert seen[3:] == ["past", "late"]


# -- workloads -----------------------------------------------------------------------------
def test_generators_make_the_asked_number_of_tasks_in_few_batches() -> None:
    rng = np.random.default_rng(3)
    big = burst(200_000, rng)
    assert big.tasks == 200_000 and len(big.batches) < 5_000
    assert max(b.submit for b in big.batches) < 1800, "a backlog lands within half an hour"
    day = diurnal(5_000, np.random.default_rng(3))
    afternoon = sum(b.count for b in day.batches if 12 * 3600 <= b.submit < 16 * 3600)
    night = sum(b.count for b in day.batches if 0 <= b.submit < 4 * 3600)
    assert afternoon > 2 * night
    mix = spiky(5_000, np.random.default_rng(3))
    assert any(b.duration >= 900 for b in mix.batches) and any(b.duration <= 60 for b in mix.batches)


def test_the_cli_names_every_generator() -> None:
    assert tuple(GENERATORS) == WORKLOADS


def test_generators_are_deterministic_by_seed() -> None:
    assert make_workload("spiky", 2_000, 7) == make_workload("spiky", 2_000, 7)
    assert make_workload("spiky", 2_000, 7) != make_workload("spiky", 2_000, 8)


def test_a_trace_loads_with_labels(tmp_path: Path) -> None:
    trace = tmp_path / "monday.csv"
    trace.write_text("submit_s,tasks,duration_s,labels\n60,5,30,gpu;onprem\n0,2,10.5,\n")
    workload = load_trace(trace)
    assert workload.name == "monday" and workload.tasks == 7
    assert workload.batches == (Batch(0.0, 2, 10.5), Batch(60.0, 5, 30.0, frozenset({"gpu", "onprem"})))


@pytest.mark.parametrize(("body", "expected"), [
    ("submit_s,tasks,duration_s\n0,1,5\n10,x,5\n", "line 3: field tasks: not a number: 'x'"),
    ("submit_s,tasks,duration_s\n0,0,5\n", "line 2: field tasks: must be greater than 0"),
    ("submit_s,tasks,duration_s\n-1,1,5\n", "line 2: field submit_s: must be at least 0"),
    ("submit_s,tasks,duration_s,labels\n0,1,5,Bad Label\n", "line 2: field labels: 'Bad Label'"),
    ("submit,tasks,duration_s\n0,1,5\n", "line 1: header lacks field(s) submit_s"),
    ("submit_s,tasks,duration_s\n", "no tasks"),
])
def test_trace_errors_name_the_line_and_the_field(tmp_path: Path, body: str, expected: str) -> None:
    trace = tmp_path / "bad.csv"
    trace.write_text(body)
    with pytest.raises(WorkloadError) as error:
        load_trace(trace)
    assert expected in str(error.value)


def test_simulation_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"(?s)simulation.*providers\.cloud\.failure_rate"):
        sim_settings(provider={"failure_rate": 2})
    with pytest.raises(ConfigError, match="unknown pool"):
        parse_simulation({"cluster": "x", "pools": [{"name": "a", "provider": "local"}],
                          "simulation": {"providers": {"b": {}}}}, "<t>")


def test_shipped_simulation_configs_load() -> None:
    assert load_simulation().cluster.pool("cloud").price_per_hour > 0
    scale = load_simulation(REPO / "config" / "simulation" / "scale.yaml")
    assert sum(p.max_nodes for p in scale.cluster.pools) >= 10_000


# -- a run's invariants ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def burst_run():
    return simulate(sim_settings(budgets={"global": {"period": "month", "amount": "50", "max_burn_per_hour": "6"}}),
                    make_workload("burst", 600, 1), seed=1)


def test_every_task_runs_and_money_respects_the_bound(burst_run) -> None:
    m = burst_run.metrics
    assert m.tasks_done == m.tasks == 600
    assert m.total_cost > 0 and m.cost_over_bound >= 1.0
    assert m.budget_violations == 0
    assert 0 < m.utilization <= 1
    assert m.wait_p50_s <= m.wait_p95_s <= m.wait_p99_s
    assert m.launches >= m.releases > 0


def test_never_above_max_nodes_nor_the_burn_cap(burst_run) -> None:
    """The budget gate of the production decide holds the burn at 6/h: 10 nodes at 0.60/h, not 12."""
    cloud = burst_run.timeline.nodes["cloud"]
    assert max(burst_run.timeline.nodes["onprem"]) == 2
    assert max(cloud) == 10, "max_nodes is 12 but max_burn_per_hour 6.00 admits 10 nodes at 0.60"


def test_a_run_is_deterministic_by_seed() -> None:
    settings, workload = sim_settings(), make_workload("spiky", 400, 2)
    first, again = simulate(settings, workload, seed=4).metrics, simulate(settings, workload, seed=4).metrics
    assert first == again
    assert simulate(settings, workload, seed=5).metrics != first


def test_the_production_decide_is_what_scales() -> None:
    """A policy knob the controller reads changes the run: fewer slots per task, fewer nodes, longer waits."""
    workload = make_workload("burst", 600, 1)
    eager = simulate(sim_settings(policy={"load_factor": 1.0}), workload, seed=1).metrics
    lazy = simulate(sim_settings(policy={"load_factor": 40.0}), workload, seed=1).metrics
    assert lazy.peak_nodes < eager.peak_nodes
    assert lazy.wait_p95_s > eager.wait_p95_s
    assert lazy.total_cost < eager.total_cost


def test_capacity_errors_back_off_and_the_work_still_finishes() -> None:
    settings = sim_settings(provider={"capacity": 3, "failure_rate": 0})
    run = simulate(settings, make_workload("burst", 300, 1), seed=1)
    assert run.metrics.tasks_done == 300 and run.metrics.launch_failures > 0
    assert max(run.timeline.nodes["cloud"]) <= 3 + 20, "refused launches are live only until refused"
    assert run.metrics.launch_failures < run.metrics.ticks, "the production backoff spaces the retries out"


def test_hourly_billing_costs_whole_hours() -> None:
    settings = sim_settings(cloud={"billing": {"granularity": "hour"}})
    run = simulate(settings, make_workload("burst", 300, 1), seed=1)
    per_node_hour = 0.60
    assert run.metrics.total_cost == pytest.approx(round(run.metrics.total_cost / per_node_hour) * per_node_hour)


def test_tasks_no_pool_can_run_are_left_waiting() -> None:
    workload = Workload("gpu", (Batch(0.0, 3, 60.0, frozenset({"gpu"})),))
    settings = sim_settings().model_copy(update={"simulation": sim_settings().simulation.model_copy(
        update={"horizon_s": 600.0})})
    run = simulate(settings, workload)
    assert run.metrics.tasks_done == 0 and run.metrics.total_cost == 0


def test_hard_stop_keeps_the_budget_and_without_it_only_busy_nodes_run_past() -> None:
    """Without hard_stop the gate refuses launches but busy nodes keep billing past the amount (per
    second) or begin a new paid hour (hourly): running tasks are never killed. With hard_stop the
    guard stops the nodes before a charge that would pass the amount: never a cent over."""
    long_tasks = Workload("long", (Batch(0.0, 16, 5400.0),))  # 8 on-prem slots, 4 cloud nodes for 1.5 h

    def run(granularity: str, hard_stop: bool):
        settings = sim_settings(cloud={"billing": {"granularity": granularity}},
                                budgets={"global": {"period": "month", "amount": "3.00", "hard_stop": hard_stop}})
        return simulate(settings, long_tasks, seed=1).metrics

    per_second, hourly = run("second", False), run("hour", False)
    assert per_second.total_cost == pytest.approx(3.65, abs=0.01) and per_second.budget_violations == 1
    assert hourly.total_cost == pytest.approx(4.80) and hourly.budget_violations == 1, "4 nodes x 2 paid hours"
    for granularity in ("second", "hour"):
        stopped = run(granularity, True)
        assert 2.90 <= stopped.total_cost <= 3.00 and stopped.budget_violations == 0, granularity
        assert stopped.tasks_done == 16 and stopped.makespan_s > per_second.makespan_s, "the cloud's tasks rerun on-prem"


def test_the_lower_bound_gives_free_slots_to_the_dearest_tasks() -> None:
    from rm.simulator.money import LowerBound

    config = parse_simulation({
        "cluster": "lb", "pools": [
            {"name": "onprem", "provider": "local", "slots": 4, "max_nodes": 1, "labels": ["gpu"]},
            {"name": "cheap", "provider": "local", "slots": 2, "max_nodes": 9, "price_per_hour": "0.72"},
            {"name": "gpu", "provider": "local", "slots": 1, "max_nodes": 9, "price_per_hour": "3.60", "labels": ["gpu"]},
        ]}, "<t>").cluster
    bound = LowerBound(config)
    assert bound.cheapest(frozenset()) == pytest.approx(0.0001)  # 0.72 / 2 slots / 3600
    # 4 free slots take the gpu tasks (0.001/s each): 2 plain tasks and 1 gpu task are left to pay
    assert bound.rate({frozenset(): 2, frozenset({"gpu"}): 5}) == pytest.approx(2 * 0.0001 + 1 * 0.001)
