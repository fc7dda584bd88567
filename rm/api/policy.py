"""Policy endpoints: show, change (admin), history, dry run; and ``whoami`` for the dashboard.

Why a dry run on the live snapshot: an admin about to lower a bound or close a window wants to
see what the controller would do with it *now* (which launches, which releases, which refusals
and why) before committing to it; the dry run decides with the proposed config and acts on
nothing.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Body, Depends
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from policies.decision import Decision
from rm.api.deps import Caller, caller, iso, leader_only, require, runtime
from rm.auth import Role
from rm.policy_admin import PolicyInvalid, apply_update, diff, current_version, history, policy_document, validate_update

router = APIRouter(prefix="/api/v1", tags=["policy"])

EXAMPLE = {"policy": {"load_factor": 2.0}, "pools": {"burst": {"max_nodes": 2}}}


def _invalid(error: PolicyInvalid) -> JSONResponse:
    return JSONResponse(status_code=422, content=jsonable_encoder({"detail": error.errors}))


def decision_view(decision: Decision) -> dict[str, Any]:
    """The decision as JSON: every launch, drain and refusal with its cause and sentence."""
    def items(values: tuple[Any, ...]) -> list[dict[str, Any]]:
        out = []
        for value in values:
            item = asdict(value)
            if "labels" in item:
                item["labels"] = sorted(item["labels"])
            out.append(item)
        return out

    return {"launches": items(decision.launches), "drains": items(decision.drains),
            "refusals": items(decision.refusals), "targets": items(decision.targets)}


@router.get("/whoami")
def whoami(who: Caller = Depends(caller)) -> dict[str, Any]:
    return {"name": who.name, "role": who.role}


@router.get("/policy")
def show(who: Caller = Depends(caller), rt=Depends(runtime)) -> dict[str, Any]:  # noqa: ANN001
    with rt.store.session() as session:
        version = current_version(session)
    return {"version": version, **policy_document(rt.config())}


@router.put("/policy")
def apply(body: Any = Body(..., examples=[EXAMPLE]), who: Caller = Depends(require(Role.ADMIN)),
          rt=Depends(runtime)) -> Any:  # noqa: ANN001
    leader_only(rt, "change the running policy")
    try:
        with rt.store.session() as session:
            version, changes = apply_update(session, body, rt.config, rt.replace_config, who.name, time.time())
    except PolicyInvalid as error:
        return _invalid(error)
    return {"version": version, "changes": changes, **policy_document(rt.config())}


@router.post("/policy/validate")
def validate(body: Any = Body(..., examples=[EXAMPLE]), who: Caller = Depends(require(Role.ADMIN)),
             rt=Depends(runtime)) -> Any:  # noqa: ANN001
    try:
        proposed = validate_update(body, rt.config())
    except PolicyInvalid as error:
        return _invalid(error)
    return {"valid": True, "changes": diff(policy_document(rt.config()), policy_document(proposed))}


@router.post("/policy/dry-run")
def dry_run(body: Any = Body(..., examples=[EXAMPLE]), who: Caller = Depends(require(Role.ADMIN)),
            rt=Depends(runtime)) -> Any:  # noqa: ANN001
    try:
        proposed = validate_update(body, rt.config())
    except PolicyInvalid as error:
        return _invalid(error)
    return {"applied": False, "decision": decision_view(rt.controller.dry_run(proposed))}


@router.get("/policy/history")
def policy_history(limit: int = 100, who: Caller = Depends(caller), rt=Depends(runtime)) -> list[dict[str, Any]]:  # noqa: ANN001
    with rt.store.session() as session:
        rows = history(session, min(max(limit, 1), 1000))
        return [{"version": v.id, "at": iso(v.at), "by": v.by, "changes": v.changes} for v in rows]
