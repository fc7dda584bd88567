"""Configuration: the YAML file an admin writes, validated by pydantic.

Why a module of its own: every other part receives these frozen models and never re-reads
YAML. Every validation error is turned into a :class:`ConfigError` whose message names the
file and the dotted path of each bad field (``pools[1].max_nodes``), because an admin
fixing a config at 3 a.m. should not have to read a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, ValidationInfo, field_validator, model_validator

from agents.tls import unverified_tls
from providers.bootstrap import BootstrapConfig
from rm.windows import WindowConfig

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"
LABEL_PATTERN = re.compile(r"^[a-z][a-z0-9_-]{0,30}$")
MAX_LABELS_PER_POOL = 6
CLOUD_LIST_INTERVAL_S = 10.0  # ARM allows ~12,000 reads an hour per subscription; a listing a tick would eat it  # a pool consumes one queue per subset of its labels: 2**6 = 64 at most


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiConfig(_Frozen):
    host: str = "127.0.0.1"
    port: StrictInt = Field(8000, ge=0, le=65535)
    advertise_url: str | None = Field(
        None, pattern=r"^https?://", description="the API's URL as cloud VMs reach it (enrolment); default http://host:port")


class PolicyConfig(_Frozen):
    """Global knobs of the scaling policy (pool-level knobs live on :class:`PoolConfig`)."""

    tick_s: float = Field(1.0, gt=0, le=600, description="seconds between controller ticks")
    load_factor: float = Field(1.0, gt=0, description="tasks per slot that justify the slot (ProActive)")
    idle_timeout_s: float = Field(60.0, ge=0, description="a node idle this long may be released")
    scale_down_ticks: StrictInt = Field(3, ge=1, description="consecutive ticks a node must be recommended for removal")
    max_launch_per_tick: StrictInt = Field(10, ge=1, description="cap on nodes launched in one pool per tick")
    budget_guard_s: float = Field(
        60.0, ge=0, description="a priced node is stopped this long before a charge (a new billing unit) that would "
                                "take a budget past its amount: longer than a tick plus a destruction")
    heartbeat_timeout_s: float = Field(10.0, gt=0, description="a registered node silent this long is lost")
    orphan_grace_s: float = Field(
        120.0, ge=0, description="a tagged VM unknown to the store (or of an ended node) is destroyed after this long")


def verified_broker_url(url: str) -> str:
    """Refuse a ``rediss://`` URL that would not verify the broker's certificate (agents.tls)."""
    if unverified_tls(url):
        raise ValueError("a rediss:// URL must carry ssl_cert_reqs=required (the broker's certificate is verified, "
                         "against agent.broker_ca_file or the system CAs)")
    return url


class AgentConfig(_Frozen):
    """How agents hold their messages. See README "Nothing lost" for why these numbers."""

    visibility_timeout_s: float = Field(10.0, gt=1, description="a message not renewed this long is redelivered")
    lease_renew_s: float = Field(2.0, gt=0, description="how often an agent renews the lease of its messages")
    restore_interval_s: float = Field(2.0, gt=0, description="how often live agents sweep for expired leases")
    soft_shutdown_timeout_s: float = Field(10.0, ge=0, description="Celery soft shutdown window on stop")
    broker_url: str | None = Field(
        None, pattern=r"^rediss?://", description="the broker's URL as cloud agents reach it; default: the manager's")
    allow_shell: bool = Field(False, description="let workflows run builtin.shell commands on the agents "
                                                 "(remote code execution by design: admins only)")
    broker_ca_file: str | None = Field(
        None, description="PEM file of the CA that signs a rediss:// broker's certificate; the manager and "
                          "every agent verify the broker with it")

    @field_validator("broker_url")
    @classmethod
    def _agent_tls_verified(cls, url: str | None) -> str | None:
        return None if url is None else verified_broker_url(url)

    @field_validator("broker_ca_file")
    @classmethod
    def _ca_is_a_certificate(cls, path: str | None) -> str | None:
        if path is not None:
            try:
                text = Path(path).read_text()
            except OSError as error:
                raise ValueError(f"cannot read {path}: {error.strerror}") from None
            if "-----BEGIN CERTIFICATE-----" not in text:
                raise ValueError(f"{path} holds no PEM certificate")
        return path

    @model_validator(mode="after")
    def _renew_faster_than_expiry(self) -> "AgentConfig":
        if self.lease_renew_s * 2 >= self.visibility_timeout_s:
            raise ValueError("lease_renew_s must be less than half of visibility_timeout_s")
        return self


class HaConfig(_Frozen):
    """High availability: instances sharing one database and broker elect one leader by a lease."""

    enabled: bool = Field(False, description="elect a leader among instances; off: this instance always leads")
    lease_s: float | None = Field(
        None, gt=0, le=3600, description="a leader that stops renewing loses the lease after this; default: 3 ticks")
    instance_id: str | None = Field(
        None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$",
        description="this instance's name in the lease; default: <hostname>-<pid>")

    def lease_for(self, tick_s: float) -> float:
        return self.lease_s if self.lease_s is not None else 3 * tick_s


Money = Annotated[Decimal, Field(ge=0, allow_inf_nan=False)]  # 0.40 in YAML is Decimal("0.4"), never a float


class BillingConfig(_Frozen):
    """How the pool's provider rounds a node's lifetime into billed time."""

    granularity: Literal["second", "minute", "hour"] = "second"
    minimum_s: StrictInt = Field(0, ge=0, le=31 * 86400, description="a launched node is billed at least this long")


class ReleaseConfig(_Frozen):
    """Billing-aware release (ProActive's releaseDelay): keep an idle node while its paid time runs."""

    before_end_s: float = Field(120.0, ge=0, description="release an idle node only this close to the end of its paid time")


class BudgetConfig(_Frozen):
    """A money cap over a calendar period (UTC) and/or on the hourly burn rate."""

    period: Literal["day", "month"] = "month"
    amount: Money | None = Field(None, description="budget per period in the cluster currency")
    max_burn_per_hour: Money | None = Field(None, description="cap on the summed price of the nodes billed at once")
    hard_stop: bool = Field(False, description="at the cap, destroy busy priced nodes too (tasks are redelivered)")
    alert_thresholds: tuple[Annotated[Decimal, Field(gt=0, le=10)], ...] = (Decimal("0.5"), Decimal("0.8"), Decimal("1.0"))

    @field_validator("alert_thresholds")
    @classmethod
    def _sorted_thresholds(cls, thresholds: tuple[Decimal, ...]) -> tuple[Decimal, ...]:
        return tuple(sorted(set(thresholds)))


class BudgetsConfig(_Frozen):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    global_: BudgetConfig | None = Field(None, alias="global", description="covers every pool")
    pools: dict[str, BudgetConfig] = Field(default_factory=dict, description="one budget per named pool")


class PoolConfig(_Frozen):
    """A node source: where nodes come from, how big they are, how many may exist."""

    name: str = Field(pattern=NAME_PATTERN)
    provider: str = Field(description="provider driver name, e.g. 'local'")
    priority: StrictInt = Field(100, description="lower is used first; on-prem pools first")
    slots: StrictInt = Field(1, ge=1, le=256, description="concurrent tasks per node (agent concurrency)")
    min_nodes: StrictInt = Field(0, ge=0)
    max_nodes: StrictInt = Field(1, ge=0, le=100_000)
    price_per_hour: Money = Decimal(0)
    billing: BillingConfig = BillingConfig()
    release: ReleaseConfig = ReleaseConfig()
    labels: tuple[str, ...] = ()
    boot_delay_s: float = Field(0.0, ge=0, description="local provider: simulated VM boot time")
    boot_timeout_s: float = Field(300.0, gt=0, description="a node not registered by then is failed")
    settings: dict[str, Any] = Field(default_factory=dict, description="provider-specific settings")
    bootstrap: BootstrapConfig = Field(BootstrapConfig(), description="cloud pools: how a VM installs the agent")
    list_interval_s: float | None = Field(
        None, ge=0, description="seconds between listings of the pool's VMs; default: every tick for local, 10 for clouds")
    windows: tuple[WindowConfig, ...] = Field(
        (), max_length=32, description="bursting windows: the pool launches only inside one (none: always)")

    @property
    def listing_every_s(self) -> float:
        """How often the pool's nodes are listed (cloud APIs have read rate limits)."""
        if self.list_interval_s is not None:
            return self.list_interval_s
        return 0.0 if self.provider == "local" else CLOUD_LIST_INTERVAL_S

    @field_validator("labels")
    @classmethod
    def _labels_well_formed(cls, labels: tuple[str, ...]) -> tuple[str, ...]:
        for label in labels:
            if not LABEL_PATTERN.match(label):
                raise ValueError(f"label {label!r} must match {LABEL_PATTERN.pattern}")
        if len(set(labels)) > MAX_LABELS_PER_POOL:
            raise ValueError(f"at most {MAX_LABELS_PER_POOL} labels per pool")
        return tuple(sorted(set(labels)))

    @field_validator("provider")
    @classmethod
    def _provider_known(cls, provider: str) -> str:
        from providers import KNOWN_PROVIDERS

        if provider not in KNOWN_PROVIDERS:
            raise ValueError(f"unknown provider {provider!r}; known: {', '.join(KNOWN_PROVIDERS)}")
        return provider

    @field_validator("settings")
    @classmethod
    def _settings_fit_provider(cls, settings: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Each driver's own model checks its block; errors read ``pools[i].settings.<field>``."""
        from providers import settings_model

        provider = info.data.get("provider")
        if provider is not None:
            settings_model(provider).model_validate(settings)
        return settings

    @field_validator("max_nodes")
    @classmethod
    def _max_not_below_min(cls, max_nodes: int, info: ValidationInfo) -> int:
        min_nodes = info.data.get("min_nodes")
        if min_nodes is not None and max_nodes < min_nodes:
            raise ValueError(f"max_nodes ({max_nodes}) is less than min_nodes ({min_nodes})")
        return max_nodes


class ClusterConfig(_Frozen):
    cluster: str = Field(pattern=NAME_PATTERN)
    database: str = "sqlite:///rm.db"
    broker: str = "embedded"
    state_dir: str = Field(".rm", description="embedded broker data, local agent pid files, CLI token")
    api: ApiConfig = ApiConfig()
    policy: PolicyConfig = PolicyConfig()
    agent: AgentConfig = AgentConfig()
    ha: HaConfig = HaConfig()
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$", description="ISO 4217 code of every price and budget")
    pools: tuple[PoolConfig, ...]
    budgets: BudgetsConfig = BudgetsConfig()  # after pools: its validator checks pool names

    @field_validator("broker")
    @classmethod
    def _broker_supported(cls, broker: str) -> str:
        if broker != "embedded" and not broker.startswith(("redis://", "rediss://")):
            raise ValueError("broker must be 'embedded' or a redis:// or rediss:// URL")
        return verified_broker_url(broker)

    @field_validator("database")
    @classmethod
    def _database_supported(cls, database: str) -> str:
        if not database.startswith(("sqlite://", "postgresql")):
            raise ValueError("database must be a sqlite:/// or postgresql+psycopg:// URL")
        return database

    @model_validator(mode="after")
    def _budget_guard_outlives_a_tick(self) -> "ClusterConfig":
        policy = self.policy
        amounts = [b for b in (self.budgets.global_, *self.budgets.pools.values()) if b is not None and b.amount is not None]
        if amounts and policy.budget_guard_s <= policy.tick_s:
            raise ValueError(f"policy.budget_guard_s ({policy.budget_guard_s:g}) must be longer than policy.tick_s "
                             f"({policy.tick_s:g}): a billing unit could begin between two ticks unseen")
        return self

    @model_validator(mode="after")
    def _lease_outlives_a_tick(self) -> "ClusterConfig":
        lease_s = self.ha.lease_for(self.policy.tick_s)
        if lease_s <= self.policy.tick_s:
            raise ValueError(f"ha.lease_s ({lease_s:g}) must be longer than policy.tick_s ({self.policy.tick_s:g}): "
                             "the leader renews its lease once a tick")
        return self

    @field_validator("pools")
    @classmethod
    def _pool_names_unique(cls, pools: tuple[PoolConfig, ...]) -> tuple[PoolConfig, ...]:
        if not pools:
            raise ValueError("at least one pool is required")
        names = [p.name for p in pools]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"pool names must be unique; repeated: {', '.join(duplicated)}")
        return pools

    @field_validator("budgets")
    @classmethod
    def _budget_pools_known(cls, budgets: BudgetsConfig, info: ValidationInfo) -> BudgetsConfig:
        known = {p.name for p in info.data.get("pools") or ()}
        unknown = sorted(set(budgets.pools) - known)
        if unknown and "pools" in info.data:
            raise ValueError(f"budgets.pools names unknown pool(s): {', '.join(unknown)}")
        return budgets

    def pool(self, name: str) -> PoolConfig:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and every bad field."""


def format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"{source}: {error.error_count()} invalid field(s)"]
    for item in error.errors():
        where = _dotted(item["loc"]) or "(top level)"
        lines.append(f"  {where}: {item['msg']}")
    return "\n".join(lines)


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def parse_config(data: Any, source: str = "<config>") -> ClusterConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, source)) from None


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that refuses a mapping naming the same key twice: PyYAML silently keeps the
    last one, so a config that says a thing twice would run with only one of them."""


def _mapping_without_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue  # a "<<" merge: the keys it brings may be overridden, that is its point
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, Hashable) and key in first_line:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first given on line {first_line[key] + 1})", key_node.start_mark)
        if isinstance(key, Hashable):
            first_line[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def yaml_problem(error: yaml.YAMLError) -> str:
    """What is wrong and where, without PyYAML's snippet of the line: that line may hold a
    password (``broker: redis://:secret@...``) and this message goes to terminals and journals."""
    if not isinstance(error, yaml.MarkedYAMLError):
        return type(error).__name__
    mark = error.problem_mark or error.context_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    what = "; ".join(part for part in (error.context, error.problem) if part)
    return f"{what or 'cannot parse'}{where}"


def load_yaml(text: str) -> Any:
    """Parse YAML safely, refusing duplicate keys (raises ``yaml.YAMLError`` naming the line)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def load_config(path: str | Path) -> ClusterConfig:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror}") from None
    try:
        data = load_yaml(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {yaml_problem(error)}") from None
    return parse_config(data, str(path))
