"""Simulated providers: how long a launch takes to boot, whether it fails, how much capacity exists.

Why lognormal boots: VM boot times are right-skewed (most in a minute or two, a few much
longer), and a policy that launches eagerly pays for that tail. Capacity and failure rates are
what make the production launch backoff and the fall-through to the next pool matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from providers.base import LaunchErrorKind
from rm.simulator.settings import ProviderModel


@dataclass(frozen=True)
class LaunchOutcome:
    ok: bool
    after_s: float  # boot time when ok, else how long the refusal takes to come back
    error: LaunchErrorKind | None = None


class SimProvider:
    """One pool's cloud: answers launches from its own seeded random stream."""

    def __init__(self, model: ProviderModel, rng: np.random.Generator) -> None:
        self.model = model
        self.rng = rng
        self.granted = 0  # nodes alive in this cloud right now

    def launch(self) -> LaunchOutcome:
        if self.model.capacity is not None and self.granted >= self.model.capacity:
            return LaunchOutcome(False, self.model.fail_after_s, LaunchErrorKind.CAPACITY)
        if self.model.failure_rate and self.rng.random() < self.model.failure_rate:
            return LaunchOutcome(False, self.model.fail_after_s, LaunchErrorKind.TRANSIENT)
        self.granted += 1
        return LaunchOutcome(True, self.boot_time())

    def boot_time(self) -> float:
        median, sigma = self.model.boot_median_s, self.model.boot_sigma
        if sigma == 0 or median == 0:
            return median
        return float(median * self.rng.lognormal(0.0, sigma))

    def released(self) -> None:
        self.granted = max(0, self.granted - 1)
