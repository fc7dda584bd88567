"""Config loading: the demo file loads exactly, and every error names the file and the field."""

from __future__ import annotations

from decimal import Decimal

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from providers.bootstrap import BootstrapConfig
from rm.config import (
    AgentConfig,
    ApiConfig,
    ClusterConfig,
    ConfigError,
    PolicyConfig,
    PoolConfig,
    load_config,
    parse_config,
)


# ---------------------------------------------------------------------------------- helpers


def _write(tmp_path: Path, text: str, name: str = "rm.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _demo_data(demo_yaml_text: str) -> dict[str, Any]:
    return yaml.safe_load(demo_yaml_text)


def _load_error(tmp_path: Path, data: Any, name: str = "rm.yaml") -> str:
    """Write ``data`` as YAML, load it, and return the ConfigError message (it must fail)."""
    return _text_error(tmp_path, yaml.safe_dump(data, sort_keys=False), name)


def _text_error(tmp_path: Path, text: str, name: str = "rm.yaml") -> str:
    """Write ``text``, load it, and return the ConfigError message (it must fail, naming the file)."""
    path = _write(tmp_path, text, name)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    return message


def _field_lines(message: str) -> dict[str, str]:
    """``{dotted field: error text}`` for each ``  field: text`` line of a ConfigError message."""
    out: dict[str, str] = {}
    for line in message.splitlines()[1:]:
        assert line.startswith("  "), message
        field, _, text = line.strip().partition(": ")
        out[field] = text
    return out


# ------------------------------------------------------------------------------ demo config


def test_demo_config_loads_exactly(tmp_path: Path, demo_yaml_text: str) -> None:
    config = load_config(_write(tmp_path, demo_yaml_text))

    assert isinstance(config, ClusterConfig)
    assert config.cluster == "demo"
    assert config.database == "sqlite:///rm-demo.db"  # trailing comment stripped
    assert config.broker == "embedded"
    assert config.state_dir == ".rm"  # default

    assert config.api == ApiConfig(host="127.0.0.1", port=8000)
    assert config.api.host == "127.0.0.1" and isinstance(config.api.host, str)
    assert config.api.port == 8000 and isinstance(config.api.port, int)

    policy = config.policy
    assert policy.tick_s == 1.0 and isinstance(policy.tick_s, float)
    assert policy.load_factor == 1.0
    assert policy.idle_timeout_s == 10.0
    assert policy.scale_down_ticks == 3  # defaults below
    assert policy.max_launch_per_tick == 10
    assert policy.heartbeat_timeout_s == 10.0

    agent = config.agent  # entirely defaulted
    assert agent == AgentConfig()
    assert agent.visibility_timeout_s == 10.0
    assert agent.lease_renew_s == 2.0
    assert agent.restore_interval_s == 2.0
    assert agent.soft_shutdown_timeout_s == 10.0

    assert isinstance(config.pools, tuple)
    assert [p.name for p in config.pools] == ["onprem", "burst"]
    onprem, burst = config.pools

    assert onprem.name == "onprem"
    assert onprem.provider == "local"
    assert onprem.priority == 0
    assert onprem.slots == 2
    assert onprem.min_nodes == 1
    assert onprem.max_nodes == 1
    assert onprem.price_per_hour == 0.0
    assert onprem.labels == ()
    assert onprem.boot_delay_s == 0.0
    assert onprem.boot_timeout_s == 300.0
    assert onprem.settings == {}

    assert burst.name == "burst"
    assert burst.provider == "local"
    assert burst.priority == 10
    assert burst.slots == 2
    assert burst.min_nodes == 0
    assert burst.max_nodes == 4
    assert burst.price_per_hour == Decimal("0.40")
    assert burst.labels == ()
    assert burst.boot_delay_s == 2.0
    assert burst.boot_timeout_s == 300.0
    assert burst.settings == {}

    assert config.pool("burst") is burst
    assert config.pool("onprem") is onprem
    with pytest.raises(KeyError):
        config.pool("nope")


def test_demo_config_full_dump(tmp_path: Path, demo_yaml_text: str) -> None:
    """The whole model, defaults included, as one value: nothing extra, nothing missing."""
    config = load_config(_write(tmp_path, demo_yaml_text))
    pool_defaults = {"labels": (), "boot_timeout_s": 300.0, "settings": {}, "bootstrap": BootstrapConfig().model_dump(),
                     "billing": {"granularity": "second", "minimum_s": 0}, "release": {"before_end_s": 120.0},
                     "list_interval_s": None, "windows": ()}
    assert config.model_dump() == {
        "cluster": "demo",
        "database": "sqlite:///rm-demo.db",
        "broker": "embedded",
        "state_dir": ".rm",
        "api": {"host": "127.0.0.1", "port": 8000, "advertise_url": None},
        "policy": {
            "tick_s": 1.0,
            "load_factor": 1.0,
            "idle_timeout_s": 10.0,
            "scale_down_ticks": 3,
            "max_launch_per_tick": 10,
            "budget_guard_s": 60.0,
            "heartbeat_timeout_s": 10.0,
            "orphan_grace_s": 120.0,
        },
        "agent": {
            "visibility_timeout_s": 10.0,
            "lease_renew_s": 2.0,
            "restore_interval_s": 2.0,
            "soft_shutdown_timeout_s": 10.0,
            "broker_url": None, "allow_shell": False, "broker_ca_file": None,
        },
        "ha": {"enabled": False, "lease_s": None, "instance_id": None},
        "currency": "EUR",
        "budgets": {"global_": None, "pools": {}},
        "pools": (
            {
                "name": "onprem",
                "provider": "local",
                "priority": 0,
                "slots": 2,
                "min_nodes": 1,
                "max_nodes": 1,
                "price_per_hour": Decimal("0"),
                "boot_delay_s": 0.0,
                **pool_defaults,
            },
            {
                "name": "burst",
                "provider": "local",
                "priority": 10,
                "slots": 2,
                "min_nodes": 0,
                "max_nodes": 4,
                "price_per_hour": Decimal("0.40"),
                "boot_delay_s": 2.0,
                **pool_defaults,
            },
        ),
    }


def test_parse_config_equals_load_config(tmp_path: Path, demo_yaml_text: str) -> None:
    assert parse_config(_demo_data(demo_yaml_text)) == load_config(_write(tmp_path, demo_yaml_text))


def test_load_config_accepts_str_path(tmp_path: Path, demo_yaml_text: str) -> None:
    path = _write(tmp_path, demo_yaml_text)
    assert load_config(str(path)) == load_config(path)


def test_config_is_frozen(tmp_path: Path, demo_yaml_text: str) -> None:
    config = load_config(_write(tmp_path, demo_yaml_text))
    with pytest.raises(ValidationError):
        config.cluster = "other"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.pools[0].max_nodes = 99  # type: ignore[misc]
    with pytest.raises(ValidationError):
        config.policy.load_factor = 2.0  # type: ignore[misc]


def test_minimal_config_gets_all_defaults() -> None:
    config = parse_config({"cluster": "c1", "pools": [{"name": "p", "provider": "local"}]})
    assert config.database == "sqlite:///rm.db"
    assert config.broker == "embedded"
    assert config.state_dir == ".rm"
    assert config.api == ApiConfig()
    assert config.policy == PolicyConfig()
    assert config.policy.idle_timeout_s == 60.0
    assert config.agent == AgentConfig()
    (pool,) = config.pools
    assert pool == PoolConfig(name="p", provider="local")
    assert (pool.priority, pool.slots, pool.min_nodes, pool.max_nodes) == (100, 1, 0, 1)
    assert (pool.price_per_hour, pool.boot_delay_s, pool.boot_timeout_s) == (0.0, 0.0, 300.0)


@pytest.mark.parametrize("broker", ["embedded", "redis://localhost:6379/0", "rediss://h:6380/1?ssl_cert_reqs=required"])
def test_supported_brokers(demo_yaml_text: str, broker: str) -> None:
    data = _demo_data(demo_yaml_text)
    data["broker"] = broker
    assert parse_config(data).broker == broker


@pytest.mark.parametrize(
    "database", ["sqlite:///rm.db", "sqlite:////abs/rm.db", "postgresql+psycopg://u@h:5432/db"]
)
def test_supported_databases(demo_yaml_text: str, database: str) -> None:
    data = _demo_data(demo_yaml_text)
    data["database"] = database
    assert parse_config(data).database == database


def test_labels_are_sorted_and_deduplicated(demo_yaml_text: str) -> None:
    data = _demo_data(demo_yaml_text)
    data["pools"][1]["labels"] = ["gpu", "cloud", "gpu"]
    assert parse_config(data).pools[1].labels == ("cloud", "gpu")


# ----------------------------------------------------------------------------------- errors


def _bad(demo_yaml_text: str, **edits: Any) -> dict[str, Any]:
    data = copy.deepcopy(_demo_data(demo_yaml_text))
    for dotted, value in edits.items():
        *parents, leaf = dotted.split("__")
        target: Any = data
        for part in parents:
            target = target[int(part)] if part.isdigit() else target[part]
        target[int(leaf) if leaf.isdigit() else leaf] = value
    return data


def test_negative_max_nodes_names_file_and_field(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, pools__1__max_nodes=-1))
    fields = _field_lines(message)
    assert list(fields) == ["pools[1].max_nodes"], message
    assert "greater than or equal to 0" in fields["pools[1].max_nodes"]


def test_min_greater_than_max_is_rejected_on_the_right_pool(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, pools__1__min_nodes=5))
    assert "pools[1]" in message
    assert "max_nodes (4) is less than min_nodes (5)" in message
    assert "pools[0]" not in message


def test_min_greater_than_max_names_dotted_field(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, pools__1__min_nodes=5))
    assert "pools[1].max_nodes" in message or "pools[1].min_nodes" in message, message


def test_zero_slots_names_field(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, pools__0__slots=0))
    assert "  pools[0].slots: " in message, message
    assert "greater than or equal to 1" in _field_lines(message)["pools[0].slots"]


def test_all_pools_invalid_reports_only_real_errors(tmp_path: Path) -> None:
    data = {"cluster": "demo", "pools": [{"name": "only", "provider": "local", "slots": 0}]}
    message = _load_error(tmp_path, data)
    assert list(_field_lines(message)) == ["pools[0].slots"], message


def test_unknown_key_is_forbidden_and_named(tmp_path: Path, demo_yaml_text: str) -> None:
    data = _demo_data(demo_yaml_text)
    data["pools"][0]["prioritty"] = 5
    message = _load_error(tmp_path, data)
    fields = _field_lines(message)
    assert list(fields) == ["pools[0].prioritty"], message
    assert "Extra inputs are not permitted" in fields["pools[0].prioritty"]


@pytest.mark.parametrize(
    ("section", "key", "field"),
    [
        (None, "clusterr", "clusterr"),
        ("policy", "tickk_s", "policy.tickk_s"),
        ("api", "hostt", "api.hostt"),
    ],
)
def test_unknown_keys_forbidden_everywhere(
    tmp_path: Path, demo_yaml_text: str, section: str | None, key: str, field: str
) -> None:
    data = _demo_data(demo_yaml_text)
    (data if section is None else data[section])[key] = 1
    message = _load_error(tmp_path, data)
    assert list(_field_lines(message)) == [field], message


def test_zero_load_factor_names_field(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, policy__load_factor=0))
    fields = _field_lines(message)
    assert list(fields) == ["policy.load_factor"], message
    assert "greater than 0" in fields["policy.load_factor"]


def test_duplicate_pool_names(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, pools__1__name="onprem"))
    fields = _field_lines(message)
    assert list(fields) == ["pools"], message
    assert "unique" in fields["pools"] and "onprem" in fields["pools"]


@pytest.mark.parametrize("broker", ["amqp://guest@localhost//", "redis", "http://redis:6379", ""])
def test_bad_broker_names_broker(tmp_path: Path, demo_yaml_text: str, broker: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, broker=broker))
    fields = _field_lines(message)
    assert list(fields) == ["broker"], message
    assert "redis://" in fields["broker"]


def test_bad_database_names_database(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, database="mysql://x/y"))
    assert list(_field_lines(message)) == ["database"], message


def test_missing_pools(tmp_path: Path, demo_yaml_text: str) -> None:
    data = _demo_data(demo_yaml_text)
    del data["pools"]
    message = _load_error(tmp_path, data)
    fields = _field_lines(message)
    assert list(fields) == ["pools"], message
    assert "required" in fields["pools"].lower()


def test_empty_pools(tmp_path: Path, demo_yaml_text: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, pools=[]))
    assert list(_field_lines(message)) == ["pools"], message


def test_missing_cluster(tmp_path: Path, demo_yaml_text: str) -> None:
    data = _demo_data(demo_yaml_text)
    del data["cluster"]
    message = _load_error(tmp_path, data)
    assert list(_field_lines(message)) == ["cluster"], message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n", ""])
def test_non_mapping_top_level(tmp_path: Path, text: str) -> None:
    assert "top level must be a mapping" in _text_error(tmp_path, text)


def test_invalid_yaml(tmp_path: Path) -> None:
    assert "not valid YAML" in _text_error(tmp_path, "cluster: demo\npools: [\n  {name: x\n")


def test_a_key_given_twice_is_refused_with_both_lines(tmp_path: Path) -> None:
    """PyYAML keeps the last of two equal keys silently; the config loader refuses them."""
    message = _text_error(tmp_path, "cluster: demo\npools:\n  - {name: onprem, provider: local}\n"
                                    "budgets: {global: {period: month, amount: 5}}\n"
                                    "budgets: {global: {period: month, amount: 50}}\n")
    assert ": not valid YAML" in message, message
    assert "duplicate key 'budgets' (first given on line 4) (line 5, column 1)" in message


def test_a_yaml_error_never_quotes_the_line(tmp_path: Path) -> None:
    """PyYAML's messages quote the offending line, which may carry the broker's password."""
    twice = _text_error(tmp_path, "cluster: demo\nbroker: redis://:s3cret@h:6379/0\nbroker: redis://:s3cret@h:6379/0\n")
    assert "duplicate key 'broker'" in twice and "s3cret" not in twice, twice
    broken = _text_error(tmp_path, "cluster: demo\nbroker: [redis://:s3cret@h:6379/0\n")
    assert "not valid YAML" in broken and "s3cret" not in broken, broken


def test_a_budget_guard_shorter_than_a_tick_is_refused(tmp_path: Path) -> None:
    text = "cluster: demo\npolicy: {tick_s: 120}\npools:\n  - {name: onprem, provider: local}\n" \
           "budgets: {global: {period: month, amount: 5}}\n"
    assert "policy.budget_guard_s (60) must be longer than policy.tick_s (120)" in _text_error(tmp_path, text)
    path = _write(tmp_path, text.replace("tick_s: 120", "tick_s: 120, budget_guard_s: 300"))
    assert load_config(path).policy.budget_guard_s == 300


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "does-not-exist.yaml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}:"), message
    assert "cannot read" in message


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert str(info.value).startswith(f"{tmp_path}:")


def test_multiple_bad_fields_listed_in_one_error(tmp_path: Path, demo_yaml_text: str) -> None:
    data = _bad(
        demo_yaml_text,
        broker="amqp://nope",
        policy__load_factor=0,
        pools__0__slots=0,
        pools__1__max_nodes=-3,
    )
    data["pools"][0]["prioritty"] = 1
    message = _load_error(tmp_path, data)
    fields = _field_lines(message)
    expected = {
        "broker",
        "policy.load_factor",
        "pools[0].slots",
        "pools[0].prioritty",
        "pools[1].max_nodes",
    }
    assert set(fields) == expected, message
    assert len(message.splitlines()) == len(fields) + 1


def test_multiple_bad_fields_with_one_valid_pool_exact(tmp_path: Path, demo_yaml_text: str) -> None:
    data = _bad(demo_yaml_text, broker="amqp://nope", policy__load_factor=0, pools__1__max_nodes=-3)
    data["pools"][1]["prioritty"] = 1
    message = _load_error(tmp_path, data)
    assert set(_field_lines(message)) == {
        "broker",
        "policy.load_factor",
        "pools[1].max_nodes",
        "pools[1].prioritty",
    }, message
    assert message.splitlines()[0] == f"{tmp_path / 'rm.yaml'}: 4 invalid field(s)", message


def test_config_error_is_value_error_without_pydantic_chain(tmp_path: Path, demo_yaml_text: str) -> None:
    path = _write(tmp_path, yaml.safe_dump(_bad(demo_yaml_text, pools__0__slots=0)))
    with pytest.raises(ValueError) as info:
        load_config(path)
    assert isinstance(info.value, ConfigError)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_parse_config_default_source_and_custom_source(demo_yaml_text: str) -> None:
    data = _bad(demo_yaml_text, pools__0__slots=0)
    with pytest.raises(ConfigError, match=r"^<config>: "):
        parse_config(data)
    with pytest.raises(ConfigError, match=r"^inline\.yaml: "):
        parse_config(data, "inline.yaml")
    with pytest.raises(ConfigError, match=r"^inline\.yaml: the top level must be a mapping, got list"):
        parse_config([1, 2], "inline.yaml")


@pytest.mark.parametrize(
    ("edits", "field"),
    [
        ({"cluster": "Demo"}, "cluster"),
        ({"pools__0__name": "On Prem"}, "pools[0].name"),
        ({"api__port": 70000}, "api.port"),
        ({"policy__tick_s": 0}, "policy.tick_s"),
        ({"policy__scale_down_ticks": 0}, "policy.scale_down_ticks"),
        ({"pools__1__price_per_hour": -0.1}, "pools[1].price_per_hour"),
        ({"pools__1__boot_timeout_s": 0}, "pools[1].boot_timeout_s"),
        ({"pools__1__labels": ["GPU"]}, "pools[1].labels"),
        ({"pools__1__labels": list("abcdefg")}, "pools[1].labels"),
    ],
)
def test_other_field_errors_are_named(
    tmp_path: Path, demo_yaml_text: str, edits: dict[str, Any], field: str
) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, **edits))
    assert list(_field_lines(message)) == [field], message


def test_agent_lease_must_renew_faster_than_expiry(tmp_path: Path, demo_yaml_text: str) -> None:
    data = _demo_data(demo_yaml_text)
    data["agent"] = {"visibility_timeout_s": 4, "lease_renew_s": 2}
    message = _load_error(tmp_path, data)
    fields = _field_lines(message)
    assert list(fields) == ["agent"], message
    assert "lease_renew_s" in fields["agent"]


@pytest.mark.parametrize("field", ["slots", "min_nodes", "max_nodes", "priority"])
def test_booleans_are_not_counts(tmp_path: Path, demo_yaml_text: str, field: str) -> None:
    message = _load_error(tmp_path, _bad(demo_yaml_text, **{f"pools__1__{field}": True}))
    assert f"pools[1].{field}" in message, message


@pytest.mark.parametrize("example", sorted(p.name for p in (Path(__file__).parent.parent / "config").glob("*.yaml")))
def test_every_example_config_loads(example: str) -> None:
    config = load_config(Path(__file__).parent.parent / "config" / example)
    assert config.pools and all(p.name for p in config.pools)
