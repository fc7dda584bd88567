"""A simulation file: a real cluster configuration plus how each pool's simulated provider behaves.

Why a real :class:`~rm.config.ClusterConfig`: the simulator must decide with the very pools,
policy knobs, prices and budgets an admin would deploy, validated by the same pydantic models,
so the file is a cluster YAML with one extra ``simulation:`` block (ignored by ``rmctl up``'s
loader, which never sees it: :func:`load_simulation` strips it first).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rm.config import ClusterConfig, ConfigError, format_validation_error, load_yaml, parse_config, yaml_problem

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "config" / "simulation" / "default.yaml"


class ProviderModel(BaseModel):
    """How one pool's cloud (or on-prem machine room) answers a launch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boot_median_s: float = Field(60.0, ge=0, description="median seconds from launch request to a registered agent")
    boot_sigma: float = Field(0.3, ge=0, le=3, description="lognormal shape of boot times (0: always the median)")
    failure_rate: float = Field(0.0, ge=0, le=1, description="share of launches the provider refuses (transient)")
    capacity: int | None = Field(None, ge=0, description="nodes the provider grants at once; beyond: capacity errors")
    fail_after_s: float = Field(5.0, ge=0, description="seconds before a refused launch is reported")
    terminate_s: float = Field(10.0, ge=0, description="seconds from release to the provider confirming the destruction")


class SimulationModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    start: datetime = Field(datetime(2026, 1, 5, tzinfo=UTC), description="virtual wall-clock start (budget periods)")
    horizon_s: float = Field(14 * 86400.0, gt=0, description="the run stops here even if tasks remain")
    tail_s: float = Field(3 * 3600.0, ge=0, description="after the last task: time left to release nodes")
    providers: dict[str, ProviderModel] = Field(default_factory=dict, description="per pool name; default ProviderModel()")


class SimulationSettings(BaseModel):
    """The validated pair the simulator runs on."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    cluster: ClusterConfig
    simulation: SimulationModel

    @property
    def start_epoch(self) -> float:
        return self.simulation.start.timestamp()

    def provider(self, pool: str) -> ProviderModel:
        return self.simulation.providers.get(pool, ProviderModel())

    def with_policy(self, **changes: Any) -> "SimulationSettings":
        """A copy with policy knobs changed (``--load-factor``, ``--idle-timeout-s``); None means keep."""
        changes = {k: v for k, v in changes.items() if v is not None}
        if not changes:
            return self
        data = self.cluster.model_dump(by_alias=True)
        data["policy"].update(changes)
        return SimulationSettings(cluster=parse_config(data, "<policy override>"), simulation=self.simulation)


def parse_simulation(data: Any, source: str) -> SimulationSettings:
    """Validate a simulation document; every error names the file and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping")
    data = dict(data)
    block = data.pop("simulation", None) or {}
    cluster = parse_config(data, source)
    try:
        simulation = SimulationModel.model_validate(block)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, f"{source} (simulation)")) from None
    unknown = sorted(set(simulation.providers) - {p.name for p in cluster.pools})
    if unknown:
        raise ConfigError(f"{source}: simulation.providers names unknown pool(s): {', '.join(unknown)}")
    return SimulationSettings(cluster=cluster, simulation=simulation)


def load_simulation(path: str | Path | None = None) -> SimulationSettings:
    path = Path(path or DEFAULT_CONFIG)
    try:
        data = load_yaml(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
    return parse_simulation(data, str(path))
