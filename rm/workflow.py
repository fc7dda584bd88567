"""Workflow validation and fan-out expansion: a submitted job body in, planned tasks out.

Why a pure module (pydantic + stdlib, no database, no Celery): a submission is checked
completely *before* anything is stored or queued, so a rejected workflow leaves no trace,
and the same rules run in the API, the CLI and the tests without a broker. The caller
passes in what depends on the running cluster (the registered task names and the label
sets of the configured pools), so these functions stay deterministic.

Why every problem at once: a user fixing a 40-task DAG should see all of its mistakes in
one answer, each located like ``tasks[2].after``, not one per round trip.

Semantics: ``after: ["tile"]`` waits for *all* replicas of ``tile``; a task's effective
labels are the workflow's labels merged with its own.
"""

from __future__ import annotations

import copy
import difflib
import heapq
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from agents.shell import SHELL_TASK


@dataclass(frozen=True)
class WorkflowLimits:
    """Ceilings that keep one submission from swamping the database, broker or scheduler."""

    max_tasks: int = 1000  # task specs in one workflow
    max_replicate: int = 10000  # fan-out of one spec
    max_expanded: int = 20000  # task instances after fan-out (one DB row + one message each)
    max_depth: int = 100  # tasks on the longest dependency chain
    max_args_bytes: int = 65536  # json.dumps of one task's args (sent in every message)


LIMITS = WorkflowLimits()

TaskName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]
Label = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,30}$")]


class TaskSpec(BaseModel):
    """One node of the DAG, possibly fanned out into ``replicate`` identical instances.

    Counts are strict integers: ``"40"`` or ``true`` in a replicate field is a user mistake.
    """

    model_config = ConfigDict(extra="forbid")

    name: TaskName
    run: Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$")]
    args: dict[str, Any] = {}
    after: list[str] = []  # names of tasks that must finish first (all their replicas)
    replicate: int = Field(1, ge=1, le=LIMITS.max_replicate, strict=True)
    retries: int = Field(0, ge=0, le=10, strict=True)
    timeout_s: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    labels: list[Label] = []


class WorkflowSpec(BaseModel):
    """A submitted workflow. Shape only: cross-field rules live in :func:`validate_workflow`."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")]
    tasks: list[TaskSpec] = Field(min_length=1, max_length=LIMITS.max_tasks)
    labels: list[Label] = []  # applied to every task, merged with the task's own


@dataclass(frozen=True)
class PlannedTask:
    """One task instance to store and queue.

    ``after`` holds task *names*: the instance waits for every replica of each of them.
    ``args`` is shared by all replicas of one spec (a copy detached from the spec): read-only.
    """

    name: str
    index: int  # replica number, 0..replicate-1
    run: str
    args: dict
    after: tuple[str, ...]
    labels: frozenset[str]
    max_retries: int
    timeout_s: float | None


class WorkflowError(ValueError):
    """A rejected workflow; ``errors`` is every problem as ``{"loc", "msg", "type"}``.

    ``loc`` is relative to the workflow body, e.g. ``["tasks", 2, "after"]``.
    """

    def __init__(self, errors: list[dict]):
        self.errors = errors
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(f"{format_loc(e['loc'])}: {e['msg']}" for e in self.errors)


def format_loc(loc: list) -> str:
    """``["tasks", 2, "after"]`` -> ``tasks[2].after``; the empty loc is the whole body."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "workflow"


def _err(loc: list, msg: str, type_: str) -> dict:
    return {"loc": loc, "msg": msg, "type": type_}


def _hint(word: str, choices: Collection[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _from_pydantic(exc: ValidationError) -> list[dict]:
    """Same shape as our own errors; an unknown key also lists the allowed ones."""
    errors = []
    for e in exc.errors():
        loc, msg = list(e["loc"]), e["msg"]
        if e["type"] == "extra_forbidden" and loc:
            allowed = sorted((WorkflowSpec if len(loc) == 1 else TaskSpec).model_fields)
            key = str(loc[-1])
            msg = f"{msg}: unknown key {key!r} (allowed: {', '.join(allowed)}){_hint(key, allowed)}"
        errors.append(_err(loc, msg, e["type"]))
    return errors


def validate_workflow(
    data: Any,
    *,
    registered: Collection[str],
    pool_label_sets: Collection[frozenset[str]],
    limits: WorkflowLimits = LIMITS,
    allow_shell: bool = False,
) -> WorkflowSpec:
    """Parse ``data`` (a dict, or JSON text) and raise :class:`WorkflowError` with every problem.

    Shape errors are reported alone: cross-field rules on a malformed body would only add
    noise. ``limits`` may tighten the model's bounds (``max_tasks``, ``max_replicate``), not
    widen them.
    """
    try:
        if isinstance(data, (str, bytes, bytearray)):
            spec = WorkflowSpec.model_validate_json(data)
        else:
            spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkflowError(_from_pydantic(exc)) from None
    errors = (
        _limit_errors(spec, limits)
        + _task_errors(spec, registered, pool_label_sets, limits, allow_shell)
        + _graph_errors(spec, limits)
    )
    if errors:
        raise WorkflowError(errors)
    return spec


def _limit_errors(spec: WorkflowSpec, limits: WorkflowLimits) -> list[dict]:
    errors = []
    if len(spec.tasks) > limits.max_tasks:
        msg = f"{len(spec.tasks)} tasks exceed max_tasks {limits.max_tasks}"
        errors.append(_err(["tasks"], msg, "too_many_tasks"))
    for i, task in enumerate(spec.tasks):
        if task.replicate > limits.max_replicate:
            msg = f"replicate {task.replicate} exceeds max_replicate {limits.max_replicate}"
            errors.append(_err(["tasks", i, "replicate"], msg, "replicate_too_large"))
    total = sum(t.replicate for t in spec.tasks)
    if total > limits.max_expanded:
        msg = f"{total} task instances after replicate exceed max_expanded {limits.max_expanded}"
        errors.append(_err(["tasks"], msg, "too_many_instances"))
    return errors


def _task_errors(
    spec: WorkflowSpec,
    registered: Collection[str],
    pool_label_sets: Collection[frozenset[str]],
    limits: WorkflowLimits,
    allow_shell: bool = False,
) -> list[dict]:
    """Per-task rules: known ``run`` (the shell only when an admin allowed it), args size, placeable labels."""
    errors = []
    pools = [frozenset(p) for p in pool_label_sets]
    known = ", ".join(sorted(registered)) or "(none)"
    for i, task in enumerate(spec.tasks):
        if task.run not in registered:
            msg = f"unknown task {task.run!r}; registered: {known}"
            errors.append(_err(["tasks", i, "run"], msg + _hint(task.run, registered), "unregistered_task"))
        elif task.run == SHELL_TASK and not allow_shell:
            msg = f"task {task.name!r} runs {SHELL_TASK}, which is disabled on this cluster (an admin enables agent.allow_shell)"
            errors.append(_err(["tasks", i, "run"], msg, "shell_disabled"))
        errors += _args_errors(i, task.args, limits)
        labels = set(spec.labels) | set(task.labels)
        if labels and not any(labels <= p for p in pools):
            msg = f"labels {', '.join(sorted(labels))}: no pool carries all of them{_offered(pools)}"
            errors.append(_err(["tasks", i, "labels"], msg, "unplaceable_labels"))
    return errors


def _offered(pools: list[frozenset[str]], most: int = 8) -> str:
    sets = sorted({"[" + ", ".join(sorted(p)) + "]" for p in pools})
    if not sets:
        return " (no pools configured)"
    more = f", ... {len(sets) - most} more" if len(sets) > most else ""
    return f" (pool label sets: {', '.join(sets[:most])}{more})"


def _args_errors(i: int, args: dict, limits: WorkflowLimits) -> list[dict]:
    """Args travel in every Celery message and DB row: they must be finite JSON and small."""
    try:
        size = len(json.dumps(args, allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        return [_err(["tasks", i, "args"], f"args must be JSON-serializable: {exc}", "args_not_json")]
    if size > limits.max_args_bytes:
        msg = f"args are {size} bytes as JSON, over max_args_bytes {limits.max_args_bytes}"
        return [_err(["tasks", i, "args"], msg, "args_too_large")]
    return []


def _duplicate_errors(spec: WorkflowSpec) -> list[dict]:
    errors, first_at = [], {}
    for i, task in enumerate(spec.tasks):
        if task.name in first_at:
            msg = f"duplicate task name {task.name!r} (first at tasks[{first_at[task.name]}])"
            errors.append(_err(["tasks", i, "name"], msg, "duplicate_name"))
        first_at.setdefault(task.name, i)
    return errors


def _dependencies(spec: WorkflowSpec) -> list[list[int]]:
    """``deps[i]``: indexes of the distinct known tasks that task ``i`` waits for (no self-edges)."""
    index = {}
    for i, task in enumerate(spec.tasks):
        index.setdefault(task.name, i)
    deps = []
    for i, task in enumerate(spec.tasks):
        found = (index.get(name) for name in task.after)
        deps.append(list(dict.fromkeys(j for j in found if j is not None and j != i)))
    return deps


def _graph_errors(spec: WorkflowSpec, limits: WorkflowLimits | None) -> list[dict]:
    """Duplicate names, unknown and self dependencies, every cycle, and (given ``limits``,
    only on a DAG) the depth limit."""
    errors = _duplicate_errors(spec)
    names = [t.name for t in spec.tasks]
    known = set(names)
    for i, task in enumerate(spec.tasks):
        for dep in dict.fromkeys(task.after):
            if dep == task.name:
                msg = f"task {dep!r} depends on itself"
                errors.append(_err(["tasks", i, "after"], msg, "self_dependency"))
            elif dep not in known:
                hint = _hint(dep, names) if len(errors) < 50 else ""  # difflib is slow in bulk
                msg = f"unknown dependency {dep!r} of task {task.name!r}{hint}"
                errors.append(_err(["tasks", i, "after"], msg, "unknown_dependency"))
    deps = _dependencies(spec)
    cycles = [c for c in _components(deps) if len(c) > 1]
    for component in cycles:
        path = _cycle_through(min(component), set(component), deps)
        msg = "cycle " + " -> ".join(names[j] for j in path) + " (each task waits for the next)"
        errors.append(_err(["tasks", path[0], "after"], msg, "cycle"))
    if not cycles and limits is not None:
        errors += _depth_errors(names, deps, limits)
    return errors


def _components(deps: list[list[int]]) -> list[list[int]]:
    """Strongly connected components (Tarjan, iterative: a chain of 1000 tasks is legal)."""
    order, low, on_stack, stack, out = {}, {}, set(), [], []
    for root in range(len(deps)):
        if root in order:
            continue
        work = [(root, 0)]
        while work:
            v, k = work.pop()
            if k == 0:
                order[v] = low[v] = len(order)
                stack.append(v)
                on_stack.add(v)
            for k in range(k, len(deps[v])):
                w = deps[v][k]
                if w not in order:
                    work += [(v, k + 1), (w, 0)]
                    break
                if w in on_stack:
                    low[v] = min(low[v], order[w])
            else:
                if low[v] == order[v]:
                    component = []
                    while not component or component[-1] != v:
                        component.append(stack.pop())
                        on_stack.discard(component[-1])
                    out.append(sorted(component))
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[v])
    return out


def _cycle_through(start: int, members: set[int], deps: list[list[int]]) -> list[int]:
    """Shortest cycle from ``start`` back to itself inside one component (breadth first)."""
    parent, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in deps[v]:
                if w == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return path[::-1] + [start]
                if w in members and w not in parent:
                    parent[w] = v
                    nxt.append(w)
        frontier = nxt
    raise AssertionError("a strongly connected component of 2+ tasks has a cycle")


def _depth_errors(names: list[str], deps: list[list[int]], limits: WorkflowLimits) -> list[dict]:
    depth: dict[int, int] = {}
    for i in _ordered(deps):
        depth[i] = 1 + max((depth[j] for j in deps[i]), default=0)
    deepest = max(depth, key=lambda i: (depth[i], -i))
    if depth[deepest] <= limits.max_depth:
        return []
    msg = (
        f"dependency chain of {depth[deepest]} tasks ending at {names[deepest]!r}"
        f" exceeds max_depth {limits.max_depth}"
    )
    return [_err(["tasks", deepest, "after"], msg, "too_deep")]


def _ordered(deps: list[list[int]]) -> list[int]:
    """Kahn's algorithm, always taking the ready task earliest in the spec; partial on a cycle."""
    waiting = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in deps]
    for i, d in enumerate(deps):
        for j in d:
            dependents[j].append(i)
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        i = heapq.heappop(ready)
        out.append(i)
        for k in dependents[i]:
            waiting[k] -= 1
            if waiting[k] == 0:
                heapq.heappush(ready, k)
    return out


def _checked_order(spec: WorkflowSpec) -> list[int]:
    """Spec indexes in dependency order; :class:`WorkflowError` if the graph rules fail."""
    errors = _graph_errors(spec, None)
    if errors:
        raise WorkflowError(errors)
    return _ordered(_dependencies(spec))


def topological_order(spec: WorkflowSpec) -> list[str]:
    """Task names, each after all the tasks it depends on, otherwise in spec order.

    Raises :class:`WorkflowError` for a spec that breaks :func:`validate_workflow`'s graph
    rules (duplicate name, unknown or self dependency, cycle), e.g. one built directly.
    """
    return [spec.tasks[i].name for i in _checked_order(spec)]


def expand(spec: WorkflowSpec) -> list[PlannedTask]:
    """Fan out: a spec with ``replicate`` N becomes N instances, indexes 0..N-1.

    Instances come in :func:`topological_order`, replicas of one spec together. A task that
    is ``after`` a replicated task waits for ALL its replicas, so ``after`` keeps names.
    """
    planned = []
    for i in _checked_order(spec):
        task = spec.tasks[i]
        args = copy.deepcopy(task.args)  # detached from the spec, shared by the replicas
        labels = frozenset(spec.labels) | frozenset(task.labels)
        after = tuple(dict.fromkeys(task.after))
        for index in range(task.replicate):
            planned.append(
                PlannedTask(task.name, index, task.run, args, after, labels, task.retries, task.timeout_s)
            )
    return planned
