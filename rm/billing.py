"""Billing rules: how a provider turns a node's lifetime into billed seconds and money.

Why a module without store or I/O imports: the pure policies (billing-aware release, the
budget gate) and the ledger must round time the same way, so both import these few functions.
Money is ``decimal.Decimal`` throughout: a cost is computed exactly and quantized to
:data:`COST_QUANTUM` (a billionth of the currency), never summed as floats; rounding to the
cent happens only when a report or a sentence shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal, localcontext

UNIT_S: dict[str, int] = {"second": 1, "minute": 60, "hour": 3600}
COST_QUANTUM = Decimal("1e-9")  # costs are exact decimals at this resolution
CENT = Decimal("0.01")
ZERO = Decimal(0)
_EXACT = Context(prec=50)  # wide enough that price * seconds / 3600 never loses a digit we keep


def as_money(value: Decimal | float | int | str) -> Decimal:
    """A Decimal from whatever a caller holds; floats go through ``str`` so 0.4 stays 0.4."""
    if isinstance(value, Decimal):
        return value
    return Decimal(str(value))


def cents(amount: Decimal) -> Decimal:
    """Round half-even to the cent: for presentation only."""
    return amount.quantize(CENT, rounding=ROUND_HALF_EVEN)


def show(amount: Decimal, currency: str) -> str:
    """``Decimal('9.6') -> '9.60 EUR'``, the way every sentence quotes money."""
    return f"{cents(amount)} {currency}"


@dataclass(frozen=True)
class BillingRule:
    """One pool's price and how its provider rounds time (taken at launch, kept in the ledger)."""

    price_per_hour: Decimal
    unit_s: int = 1  # billing granularity: 1 (per second), 60 (per minute) or 3600 (per hour)
    minimum_s: int = 0  # a billed node is billed at least this long

    @property
    def smallest_charge_s(self) -> int:
        """What launching a node commits to at least: one unit, and the minimum."""
        return max(self.unit_s, self.minimum_s)

    def billed_s(self, duration_s: float) -> int:
        """Seconds billed for a node that existed ``duration_s`` seconds.

        The duration is read to the millisecond first, so float noise in two epoch timestamps
        (1800.0000001 s) does not bill one more unit.
        """
        units = math.ceil(round(max(duration_s, 0.0), 3) / self.unit_s)
        return max(self.minimum_s, units * self.unit_s)

    def committed_s(self, elapsed_s: float) -> int:
        """Seconds a live node is already bound to pay: its current unit, at least the minimum."""
        return max(self.billed_s(elapsed_s), self.smallest_charge_s)

    def cost(self, seconds: float | int | Decimal) -> Decimal:
        """Price of ``seconds`` of this node, exact to :data:`COST_QUANTUM`."""
        return cost_of(self.price_per_hour, seconds)

    @property
    def smallest_charge(self) -> Decimal:
        return self.cost(self.smallest_charge_s)


def cost_of(price_per_hour: Decimal, seconds: float | int | Decimal, shares: int = 1) -> Decimal:
    """``price_per_hour * seconds / 3600 / shares`` quantized to :data:`COST_QUANTUM`.

    ``shares`` splits a node's price between its slots (a task pays for the slot it holds).
    Seconds are read to the millisecond, like every duration the ledger bills.
    """
    with localcontext(_EXACT):
        raw = price_per_hour * as_money(round(seconds, 3) if isinstance(seconds, float) else seconds) / 3600 / shares
        return raw.quantize(COST_QUANTUM, rounding=ROUND_HALF_EVEN)


def paid_until(rule: BillingRule, started_at: float, now: float) -> float:
    """When the unit a live node is in (or its minimum) runs out: release just before, not after."""
    return started_at + rule.committed_s(now - started_at)
