"""Money endpoints: cost reports (JSON or CSV) and where every budget stands.

Who reads what: a cost report shows what each job and owner spent, so it is for admins; budget
status (spent, committed, remaining, alerts) tells anyone watching the cluster why bursting
stopped, so any token may read it (viewer and up).

Money is rendered as decimal strings with two decimals ("3.21"), never JSON floats, so the rows
of a report add up to its total exactly in any client.
"""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import Response

from rm.api.deps import Caller, caller, iso, require, runtime
from rm.auth import Role
from rm.budget import budget_status, period_bounds
from rm.costs import KEY_COLUMNS, load_report

router = APIRouter(prefix="/api/v1", tags=["money"])


def _invalid(field: str, message: str, value: Any) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors, naming the query field."""
    return HTTPException(422,
                         [{"loc": ["query", field], "msg": message, "type": "value_error", "input": value}])


def parse_instant(value: str | None, field: str, default: float) -> float:
    """An ISO 8601 date or date-time (UTC when no offset is given) as epoch seconds."""
    if value is None or value == "":
        return default
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(field, "not an ISO 8601 date or date-time (e.g. 2026-03-01 or 2026-03-01T12:00:00Z)",
                       value) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def report_csv(report: dict[str, Any]) -> str:
    """The rows as CSV (stdlib csv): the group's key columns, then cost and currency."""
    columns = [*KEY_COLUMNS[report["group_by"]], "cost", "currency"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        writer.writerow({**{k: ("" if v is None else v) for k, v in row.items()}, "currency": report["currency"]})
    return out.getvalue()


@router.get("/costs")
def costs(from_: str | None = Query(None, alias="from", description="ISO date or date-time; default: start of this month (UTC)"),
          to: str | None = Query(None, description="ISO date or date-time; default: now"),
          group_by: Literal["pool", "provider", "day", "job", "owner"] = "pool",
          format: Literal["json", "csv"] = "json",  # noqa: A002 - the query parameter's name
          who: Caller = Depends(require(Role.ADMIN)), rt=Depends(runtime)) -> Any:  # noqa: ANN001
    """What the ledger billed in ``[from, to)``, grouped; rows add up to ``total`` exactly."""
    now = time.time()
    start = parse_instant(from_, "from", period_bounds("month", now)[0])
    end = parse_instant(to, "to", now)
    if start >= end:
        raise _invalid("from", f"from ({iso(start)}) must be before to ({iso(end)})", from_)
    with rt.store.session() as session:
        report = load_report(session, group_by, start, end, now, rt.config().currency)
    if format == "csv":
        return Response(report_csv(report), media_type="text/csv",
                        headers={"Content-Disposition": f'attachment; filename="costs-by-{group_by}.csv"'})
    return {**report, "from": iso(start), "to": iso(end)}


@router.get("/budget")
def budget(who: Caller = Depends(caller), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    """Each budget: spent, committed, remaining, projected end-of-period spend, and its alerts."""
    now = time.time()
    with rt.store.session() as session:
        found = budget_status(session, rt.config(), now)
    for item in found["budgets"]:
        item["period_start"], item["period_end"] = iso(item["period_start"]), iso(item["period_end"])
        for alert in item["alerts"]:
            alert["at"] = iso(alert["at"])
    return {**found, "at": iso(now)}
