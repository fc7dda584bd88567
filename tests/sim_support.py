"""Small simulation settings for the simulator tests: one free on-prem pool and one priced cloud pool."""

from __future__ import annotations

from typing import Any

from rm.simulator.settings import SimulationSettings, parse_simulation


def sim_settings(policy: dict[str, Any] | None = None, cloud: dict[str, Any] | None = None,
                 budgets: dict[str, Any] | None = None, provider: dict[str, Any] | None = None) -> SimulationSettings:
    data: dict[str, Any] = {
        "cluster": "simtest",
        "policy": {"tick_s": 10, "load_factor": 1.0, "idle_timeout_s": 120, "scale_down_ticks": 2,
                   "max_launch_per_tick": 20, **(policy or {})},
        "pools": [
            {"name": "onprem", "provider": "local", "priority": 0, "slots": 4, "min_nodes": 2, "max_nodes": 2,
             "labels": ["onprem"]},
            {"name": "cloud", "provider": "local", "priority": 10, "slots": 2, "min_nodes": 0, "max_nodes": 12,
             "price_per_hour": "0.60", **(cloud or {})},
        ],
        "simulation": {"tail_s": 3600, "providers": {
            "onprem": {"boot_median_s": 0, "boot_sigma": 0, "terminate_s": 0},
            "cloud": {"boot_median_s": 60, "boot_sigma": 0.3, "failure_rate": 0.05, "terminate_s": 10, **(provider or {})},
        }},
    }
    if budgets:
        data["budgets"] = budgets
    return parse_simulation(data, "<test>")
