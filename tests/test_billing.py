"""Billing rules: granularities, minimums, exact Decimal costs, paid time, config validation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rm.billing import BillingRule, cents, cost_of, paid_until, show
from rm.config import ConfigError, parse_config

EUR_040 = Decimal("0.40")


@pytest.mark.parametrize(("unit", "minimum", "duration", "billed"), [
    (1, 0, 0.0, 0),
    (1, 0, 1800.0000001, 1800),  # float noise in two timestamps bills no extra second
    (1, 0, 1800.4, 1801),
    (1, 60, 10, 60),  # per second with a one-minute minimum
    (60, 0, 61, 120),
    (3600, 0, 1, 3600),
    (3600, 0, 3600, 3600),
    (3600, 0, 3601, 7200),
    (60, 600, 700.5, 720),
])
def test_billed_seconds(unit: int, minimum: int, duration: float, billed: int) -> None:
    assert BillingRule(EUR_040, unit, minimum).billed_s(duration) == billed


def test_committed_is_at_least_one_unit() -> None:
    hourly = BillingRule(EUR_040, 3600)
    assert hourly.committed_s(0) == 3600
    assert hourly.committed_s(3599) == 3600
    assert hourly.smallest_charge == Decimal("0.40")
    assert BillingRule(EUR_040, 1, 60).smallest_charge_s == 60


def test_costs_are_exact_decimals() -> None:
    assert cost_of(EUR_040, 1800) == Decimal("0.2")
    assert cost_of(EUR_040, 1) == Decimal("0.000111111")  # 0.40 / 3600, quantized to 1e-9
    assert cost_of(Decimal("0.10"), 0.5) == Decimal("0.000013889")
    assert show(Decimal("9.6"), "EUR") == "9.60 EUR"
    assert cents(Decimal("0.125")) == Decimal("0.12")  # half-even


def test_paid_until_hourly() -> None:
    rule = BillingRule(EUR_040, 3600)
    assert paid_until(rule, 1000.0, 1000.0) == 4600.0
    assert paid_until(rule, 1000.0, 4700.0) == 8200.0


@given(unit=st.sampled_from((1, 60, 3600)), minimum=st.integers(0, 7200),
       duration=st.floats(0, 100_000, allow_nan=False))
def test_billed_covers_the_duration_and_the_minimum(unit: int, minimum: int, duration: float) -> None:
    rule = BillingRule(EUR_040, unit, minimum)
    billed = rule.billed_s(duration)
    assert billed >= minimum and billed % unit == 0 or billed == minimum
    assert billed >= round(duration, 3) - 1e-9
    assert billed == minimum or billed - round(duration, 3) < unit


def _pools(**burst: object) -> list[dict]:
    return [{"name": "onprem", "provider": "local", "priority": 0},
            {"name": "burst", "provider": "local", "price_per_hour": 0.40, **burst}]


def test_money_config_defaults_keep_old_configs_valid() -> None:
    config = parse_config({"cluster": "c", "pools": _pools()})
    burst = config.pool("burst")
    assert config.currency == "EUR"
    assert burst.price_per_hour == Decimal("0.40")
    assert (burst.billing.granularity, burst.billing.minimum_s, burst.release.before_end_s) == ("second", 0, 120.0)
    assert config.budgets.global_ is None and config.budgets.pools == {}


def test_money_config_parses_budgets() -> None:
    config = parse_config({
        "cluster": "c", "currency": "USD",
        "pools": _pools(billing={"granularity": "hour", "minimum_s": 3600}, release={"before_end_s": 300}),
        "budgets": {"global": {"period": "month", "amount": 100, "max_burn_per_hour": 5.5},
                    "pools": {"burst": {"period": "day", "amount": "10.00", "hard_stop": True,
                                        "alert_thresholds": [0.9, 0.5]}}},
    })
    assert config.budgets.global_.amount == Decimal(100)
    assert config.budgets.global_.max_burn_per_hour == Decimal("5.5")
    assert config.budgets.pools["burst"].alert_thresholds == (Decimal("0.5"), Decimal("0.9"))
    assert config.pool("burst").billing.granularity == "hour"


@pytest.mark.parametrize(("change", "field"), [
    ({"budgets": {"pools": {"ghost": {"amount": 1}}}}, "budgets: Value error, budgets.pools names unknown pool(s): ghost"),
    ({"budgets": {"global": {"amount": -1}}}, "budgets.global.amount"),
    ({"budgets": {"global": {"period": "week"}}}, "budgets.global.period"),
    ({"budgets": {"global": {"alert_thresholds": [0]}}}, "budgets.global.alert_thresholds[0]"),
    ({"budgets": {"global": {"amount": 1, "typo": 1}}}, "budgets.global.typo"),
    ({"currency": "euro"}, "currency"),
])
def test_money_config_errors_name_the_field(change: dict, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"cluster": "c", "pools": _pools(), **change})
    assert f"  {field}" in str(error.value)


@pytest.mark.parametrize(("burst", "field"), [
    ({"billing": {"granularity": "day"}}, "pools[1].billing.granularity"),
    ({"billing": {"minimum_s": -5}}, "pools[1].billing.minimum_s"),
    ({"release": {"before_end_s": -1}}, "pools[1].release.before_end_s"),
    ({"price_per_hour": "nan"}, "pools[1].price_per_hour"),
])
def test_pool_billing_errors_name_the_field(burst: dict, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"cluster": "c", "pools": _pools(**burst)})
    assert f"  {field}" in str(error.value)
