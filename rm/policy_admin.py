"""Policy administration: read, validate, diff, apply and version the policy while the system runs.

Why a document of its own rather than the whole config: an admin tunes the knobs that are safe to
change under a running controller (the global ``policy`` block, and per pool its bounds, priority,
boot timeout, bursting windows and release delay); what was wired at start (database, broker,
providers and their credentials, slots, labels) is neither shown nor editable here.

Validation reuses the config models: an update is merged into the running config and the merged
config goes through :class:`rm.config.ClusterConfig`, so every rule of the YAML file applies
(``max_nodes >= min_nodes``, cron syntax, time zones...). Every bad field is reported at once with
a ``loc`` in the update's own terms (``["body", "pools", "burst", "max_nodes"]``), and nothing is
applied unless everything is valid. An update is a merge: fields it leaves out keep their value.

The YAML file stays the source at start-up: a restarted manager starts from its file and does not
re-apply the versions recorded here (the file is what an admin reviews and keeps in version
control; silently overriding it from the database would make the file lie). The history keeps
every applied change, so carrying one into the file is a copy. With high availability, a standby
that becomes the leader adopts the newest version recorded *since it started* (:func:`adopt_since`):
a failover must not silently undo a change the admin made to the running cluster.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from rm.config import ClusterConfig
from rm.events import EventKind, record_event
from rm.models import PolicyVersion

POOL_EDITABLE = ("priority", "min_nodes", "max_nodes", "boot_timeout_s", "windows", "release")
_apply_lock = threading.Lock()


class PolicyInvalid(ValueError):
    """An update that cannot be applied; ``errors`` are FastAPI-shaped items, each with its ``loc``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


def policy_document(config: ClusterConfig) -> dict[str, Any]:
    """The editable policy as JSON: the global block and each pool's runtime-safe settings."""
    return {
        "policy": config.policy.model_dump(mode="json"),
        "pools": {p.name: p.model_dump(mode="json", include=set(POOL_EDITABLE)) for p in config.pools},
    }


def _error(loc: list[Any], msg: str, value: Any, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind, "input": value}


def _shape_errors(update: Any, config: ClusterConfig) -> list[dict[str, Any]]:
    """Errors in the update's shape: unknown sections, unknown pools, fields not editable at run time."""
    if not isinstance(update, dict):
        return [_error([], "a policy update must be a JSON object with 'policy' and/or 'pools'", update, "model_type")]
    errors = [_error([key], "unknown section; expected 'policy' or 'pools'", update[key], "extra_forbidden")
              for key in update if key not in ("policy", "pools", "version")]
    if not isinstance(update.get("policy", {}), dict):
        errors.append(_error(["policy"], "must be an object", update["policy"], "dict_type"))
    pools = update.get("pools", {})
    if not isinstance(pools, dict):
        return errors + [_error(["pools"], "must be an object keyed by pool name", pools, "dict_type")]
    known = {p.name for p in config.pools}
    for name, fields in pools.items():
        if name not in known:
            errors.append(_error(["pools", name], f"no pool named {name!r}; known: {', '.join(sorted(known))}", fields))
        elif not isinstance(fields, dict):
            errors.append(_error(["pools", name], "must be an object", fields, "dict_type"))
        else:
            errors += [_error(["pools", name, key], f"not editable at run time; editable: {', '.join(POOL_EDITABLE)}",
                              value, "extra_forbidden") for key, value in fields.items() if key not in POOL_EDITABLE]
    return errors


def _merged(update: dict[str, Any], config: ClusterConfig) -> dict[str, Any]:
    data = config.model_dump(by_alias=True)
    data["policy"] = {**data["policy"], **update.get("policy", {})}
    data["pools"] = list(data["pools"])
    index = {pool["name"]: i for i, pool in enumerate(data["pools"])}
    for name, fields in update.get("pools", {}).items():
        data["pools"][index[name]] = {**data["pools"][index[name]], **fields}
    return data


def _in_update_terms(loc: tuple[Any, ...], config: ClusterConfig) -> list[Any]:
    """``("pools", 1, "max_nodes")`` becomes ``["body", "pools", "burst", "max_nodes"]``."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "pools" and isinstance(parts[1], int) and parts[1] < len(config.pools):
        parts[1] = config.pools[parts[1]].name
    return ["body", *parts]


def _editable_part(update: Any, config: ClusterConfig) -> dict[str, Any]:
    """What is left of an update once the parts :func:`_shape_errors` reports are dropped."""
    if not isinstance(update, dict):
        return {}
    known = {p.name for p in config.pools}
    policy = update.get("policy") if isinstance(update.get("policy"), dict) else {}
    pools = update.get("pools") if isinstance(update.get("pools"), dict) else {}
    return {"policy": policy, "pools": {
        name: {k: v for k, v in fields.items() if k in POOL_EDITABLE}
        for name, fields in pools.items() if name in known and isinstance(fields, dict)}}


def validate_update(update: Any, config: ClusterConfig) -> ClusterConfig:
    """The running config with ``update`` merged in, or :class:`PolicyInvalid` naming every bad field:
    the shape errors and the value errors of the rest, together."""
    errors = _shape_errors(update, config)
    try:
        proposed = ClusterConfig.model_validate(_merged(_editable_part(update, config), config))
    except ValidationError as error:
        errors += [{"loc": _in_update_terms(e["loc"], config), "msg": e["msg"], "type": e["type"],
                    "input": e.get("input")} for e in error.errors(include_url=False)]
    if errors:
        raise PolicyInvalid(errors)
    return proposed


def diff(before: dict[str, Any], after: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """Fields whose value differs, as ``{"path": "pools.burst.max_nodes", "from": 4, "to": 2}``."""
    changes = []
    for key in sorted(set(before) | set(after)):
        path = f"{prefix}{key}"
        old, new = before.get(key), after.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            changes += diff(old, new, path + ".")
        elif old != new:
            changes.append({"path": path, "from": old, "to": new})
    return changes


def current_version(session: Session) -> int:
    return session.scalar(select(func.max(PolicyVersion.id))) or 0


def apply_update(session: Session, update: Any, config: Callable[[], ClusterConfig],
                 replace: Callable[[ClusterConfig], None], by: str, now: float) -> tuple[int, list[dict[str, Any]]]:
    """Validate, record a version with its diff and an event, and hand the new config to the runtime.

    The controller reads the config at the top of every tick, so the change counts from the next
    tick on. An update that changes nothing records nothing and returns the current version.
    """
    with _apply_lock:
        running = config()
        proposed = validate_update(update, running)
        before, after = policy_document(running), policy_document(proposed)
        changes = diff(before, after)
        if not changes:
            return current_version(session), []
        version = PolicyVersion(at=now, by=by, changes=changes, document=after)
        session.add(version)
        session.flush()
        summary = ", ".join(f"{c['path']} {c['from']} -> {c['to']}" for c in changes[:8])
        more = f" and {len(changes) - 8} more" if len(changes) > 8 else ""
        record_event(session, EventKind.POLICY, "admin", f"policy version {version.id} applied by {by}: {summary}{more}; "
                     "the controller uses it from its next tick", now=now, data={"version": version.id})
        session.commit()
        replace(proposed)
        return version.id, changes


def adopt_since(session: Session, since: float, config: ClusterConfig) -> tuple[ClusterConfig, int] | None:
    """The running config with the newest policy version recorded at or after ``since`` merged in,
    and that version's id; None when there is none. Raises :class:`PolicyInvalid` if the recorded
    document no longer fits this instance's config (a pool it does not have)."""
    latest = session.scalar(select(PolicyVersion).where(PolicyVersion.at >= since)
                            .order_by(PolicyVersion.id.desc()).limit(1))
    if latest is None:
        return None
    return validate_update(latest.document, config), latest.id


def history(session: Session, limit: int = 100) -> list[PolicyVersion]:
    return list(session.scalars(select(PolicyVersion).order_by(PolicyVersion.id.desc()).limit(limit)))
