"""Bursting windows: the times a pool may launch nodes (ProActive's time-slot and cron policies).

Why a window is a cron expression plus a duration in a named time zone: "weekdays 08:00 to
19:00 Paris time" is ``{cron: "0 8 * * 1-5", duration_s: 39600, timezone: Europe/Paris}``, and
croniter already knows every corner of cron syntax and daylight saving. The controller asks
:func:`window_open` once per pool per tick and hands the answer to the pure policy as
``PoolView.window_open``; the policy itself never reads a clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_WINDOW_S = 7 * 86400


class WindowConfig(BaseModel):
    """One recurring window: it opens at each time ``cron`` fires and stays open ``duration_s``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str = Field(description="5-field cron expression of the window's openings, e.g. '0 8 * * 1-5'")
    duration_s: float = Field(gt=0, le=MAX_WINDOW_S, description="how long the window stays open after each opening")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in, e.g. Europe/Paris")

    @field_validator("cron")
    @classmethod
    def _cron_valid(cls, cron: str) -> str:
        if len(cron.split()) != 5 or not croniter.is_valid(cron):
            raise ValueError(f"{cron!r} is not a 5-field cron expression (minute hour day month weekday)")
        return cron

    @field_validator("timezone")
    @classmethod
    def _timezone_known(cls, timezone: str) -> str:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r} (an IANA name such as Europe/Paris)") from None
        return timezone

    def open_at(self, now: float) -> bool:
        """Whether ``now`` falls within ``duration_s`` after the latest opening at or before it."""
        moment = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        # croniter's get_prev is strictly before its start: start a second later so an opening at `now` counts
        last = croniter(self.cron, datetime.fromtimestamp(now + 1, ZoneInfo(self.timezone))).get_prev(datetime)
        return (moment - last).total_seconds() < self.duration_s


def window_open(windows: Sequence[WindowConfig], now: float) -> bool:
    """A pool without windows may always launch; otherwise only while one of them is open."""
    return not windows or any(window.open_at(now) for window in windows)


def describe(windows: Sequence[WindowConfig]) -> str:
    """The windows as a short phrase for event sentences."""
    return "; ".join(f"'{w.cron}' for {w.duration_s:g} s ({w.timezone})" for w in windows)
