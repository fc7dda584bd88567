"""Workflow validation and fan-out expansion (rm.workflow): pure, no broker, no database."""

from __future__ import annotations

import copy
import json

import pytest

from rm.workflow import (
    LIMITS,
    PlannedTask,
    WorkflowError,
    WorkflowLimits,
    WorkflowSpec,
    expand,
    topological_order,
    validate_workflow,
)

from tests.workflows import S1_ORTHO

REGISTERED = {"builtin.sleep", "builtin.echo", "builtin.cpu"}
POOLS = [frozenset({"onprem"}), frozenset({"cloud", "gpu"}), frozenset()]

EXAMPLE = S1_ORTHO


def check(data, *, registered=REGISTERED, pools=POOLS, limits=LIMITS) -> WorkflowSpec:
    return validate_workflow(data, registered=registered, pool_label_sets=pools, limits=limits)


def rejected(data, **kwargs) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        check(data, **kwargs)
    return info.value


def body(*tasks, **top) -> dict:
    return {"name": "wf", "tasks": list(tasks), **top}


def task(name, run="builtin.sleep", **fields) -> dict:
    return {"name": name, "run": run, **fields}


def only(err: WorkflowError, type_: str) -> list[dict]:
    return [e for e in err.errors if e["type"] == type_]


# --- the happy path ---------------------------------------------------------------------


def test_example_validates_and_expands_to_42_planned_tasks():
    planned = expand(check(EXAMPLE))
    assert len(planned) == 42
    assert all(isinstance(p, PlannedTask) for p in planned)
    assert planned[0] == PlannedTask(
        "fetch", 0, "builtin.sleep", {"seconds": 0.5}, (), frozenset(), 0, None
    )
    tiles = planned[1:41]
    assert [p.index for p in tiles] == list(range(40))
    assert {(p.name, p.run, p.after) for p in tiles} == {("tile", "builtin.sleep", ("fetch",))}
    assert all(p.args == {"seconds": 2} for p in tiles)
    assert planned[41] == PlannedTask(
        "zip", 0, "builtin.echo", {"ok": True}, ("tile",), frozenset(), 0, None
    )


def test_example_as_json_text_validates():
    assert check(json.dumps(EXAMPLE)).tasks[1].replicate == 40


def test_validation_does_not_mutate_input_and_args_are_detached():
    data = copy.deepcopy(EXAMPLE)
    spec = check(data)
    assert data == EXAMPLE
    planned = expand(spec)
    planned[0].args["seconds"] = 99
    assert spec.tasks[0].args == {"seconds": 0.5}


def test_retries_and_timeout_carried_into_planned_tasks():
    spec = check(body(task("a", retries=3, timeout_s=12.5)))
    (p,) = expand(spec)
    assert (p.max_retries, p.timeout_s) == (3, 12.5)


def test_labels_merge_workflow_and_task_labels():
    spec = check(body(task("a"), task("b", labels=["gpu"]), labels=["cloud"]))
    a, b = expand(spec)
    assert a.labels == frozenset({"cloud"})
    assert b.labels == frozenset({"cloud", "gpu"})


def test_duplicate_after_entries_are_collapsed():
    (_, b) = expand(check(body(task("a"), task("b", after=["a", "a"]))))
    assert b.after == ("a",)


# --- ordering ---------------------------------------------------------------------------


def test_topological_order_diamond():
    # d waits for b and c, which both wait for a; spec lists them out of order.
    spec = check(
        body(
            task("d", after=["b", "c"]),
            task("c", after=["a"]),
            task("b", after=["a"]),
            task("a"),
        )
    )
    assert topological_order(spec) == ["a", "c", "b", "d"]
    planned = expand(spec)
    assert [p.name for p in planned] == ["a", "c", "b", "d"]
    assert planned[-1].after == ("b", "c")


def test_topological_order_is_stable_by_spec_order_for_independent_tasks():
    spec = check(body(task("z"), task("y"), task("x", after=["z"]), task("w")))
    assert topological_order(spec) == ["z", "y", "x", "w"]


def test_expand_places_every_instance_after_all_replicas_it_waits_for():
    spec = check(
        body(
            task("merge", after=["left", "right"]),
            task("left", replicate=3, after=["src"]),
            task("src", replicate=2),
            task("right", replicate=2),
        )
    )
    planned = expand(spec)
    first = {}
    last = {}
    for pos, p in enumerate(planned):
        first.setdefault(p.name, pos)
        last[p.name] = pos
    for p in planned:
        for dep in p.after:
            assert last[dep] < first[p.name]
    assert len(planned) == 1 + 3 + 2 + 2


def test_topological_order_rejects_unvalidated_cyclic_spec():
    spec = WorkflowSpec.model_validate(body(task("a", after=["b"]), task("b", after=["a"])))
    with pytest.raises(WorkflowError, match="cycle"):
        topological_order(spec)
    with pytest.raises(WorkflowError):
        expand(spec)


# --- shape errors (pydantic) ------------------------------------------------------------


def test_unknown_top_level_key_is_named():
    err = rejected({**EXAMPLE, "taks": []})
    (e,) = err.errors
    assert e["loc"] == ["taks"]
    assert e["type"] == "extra_forbidden"
    assert "'taks'" in e["msg"] and "did you mean 'tasks'" in e["msg"]
    assert str(err).startswith("taks: ")


def test_unknown_task_key_is_named():
    err = rejected(body(task("a", retry=2)))
    (e,) = err.errors
    assert e["loc"] == ["tasks", 0, "retry"]
    assert "did you mean 'retries'" in e["msg"]


@pytest.mark.parametrize("replicate", [0, 10001, -1, "40", True, 2.0])
def test_bad_replicate_rejected_naming_replicate(replicate):
    err = rejected(body(task("a"), task("b", replicate=replicate)))
    (e,) = err.errors
    assert e["loc"] == ["tasks", 1, "replicate"]
    assert "tasks[1].replicate" in str(err)


@pytest.mark.parametrize(
    "field, value",
    [
        ("name", "1abc"),
        ("name", "a" * 65),
        ("run", "builtin sleep"),
        ("retries", 11),
        ("retries", -1),
        ("timeout_s", 0),
        ("timeout_s", float("inf")),
        ("labels", ["GPU"]),
        ("args", [1, 2]),
        ("after", "a"),
    ],
)
def test_bad_task_field_rejected(field, value):
    err = rejected(body(task("ok"), {**task("t"), field: value}))
    assert err.errors and all(e["loc"][:3] == ["tasks", 1, field] for e in err.errors)


def test_shape_errors_collected_together_and_cross_checks_skipped():
    err = rejected(
        {"name": "", "tasks": [task("a", run="nope", replicate=0), task("b", labels=["Bad"])], "x": 1}
    )
    locs = [e["loc"] for e in err.errors]
    assert ["name"] in locs and ["x"] in locs
    assert ["tasks", 0, "replicate"] in locs and ["tasks", 1, "labels", 0] in locs
    assert not only(err, "unregistered_task")  # cross-field rules wait for a valid shape


@pytest.mark.parametrize("data", [None, [], "not json", {"name": "wf", "tasks": []}, {"tasks": [task("a")]}])
def test_malformed_bodies_rejected(data):
    assert rejected(data).errors


def test_workflow_name_may_be_128_chars_not_129():
    check(body(task("a")) | {"name": "w" * 128})
    (e,) = rejected(body(task("a")) | {"name": "w" * 129}).errors
    assert e["loc"] == ["name"]


def test_too_many_task_specs():
    many = [task(f"t{i}") for i in range(LIMITS.max_tasks + 1)]
    (e,) = rejected(body(*many)).errors
    assert e["loc"] == ["tasks"]


# --- cross-field errors -----------------------------------------------------------------


def test_duplicate_task_name():
    err = rejected(body(task("a"), task("b"), task("a")))
    (e,) = err.errors
    assert e["loc"] == ["tasks", 2, "name"]
    assert "duplicate task name 'a'" in e["msg"] and "tasks[0]" in e["msg"]


def test_unknown_dependency_names_dependency_and_task():
    (e,) = rejected(body(task("fetch"), task("zip", after=["tiel"]))).errors
    assert e["loc"] == ["tasks", 1, "after"]
    assert e["type"] == "unknown_dependency"
    assert "'tiel'" in e["msg"] and "'zip'" in e["msg"]


def test_self_dependency():
    (e,) = rejected(body(task("a", after=["a"]))).errors
    assert e["loc"] == ["tasks", 0, "after"]
    assert e["type"] == "self_dependency"
    assert "'a' depends on itself" in e["msg"]


def test_cycle_lists_path():
    err = rejected(body(task("x"), task("a", after=["b"]), task("b", after=["a"])))
    (e,) = err.errors
    assert e["type"] == "cycle"
    assert e["loc"] == ["tasks", 1, "after"]
    assert "cycle a -> b -> a" in e["msg"]
    assert "tasks[1].after: cycle a -> b -> a" in str(err)


def test_longer_cycle_and_independent_cycles_all_reported():
    err = rejected(
        body(
            task("a", after=["c"]),
            task("b", after=["a"]),
            task("c", after=["b"]),
            task("p", after=["q", "a"]),
            task("q", after=["p"]),
            task("ok"),
        )
    )
    msgs = sorted(e["msg"] for e in only(err, "cycle"))
    assert len(msgs) == 2
    assert msgs[0].startswith("cycle a -> c -> b -> a")
    assert msgs[1].startswith("cycle p -> q -> p")


def test_depth_limit():
    chain = [task("t0")] + [task(f"t{i}", after=[f"t{i - 1}"]) for i in range(1, 101)]
    check(body(*chain[:100]))  # 100 tasks deep is the limit
    (e,) = rejected(body(*chain)).errors
    assert e["type"] == "too_deep"
    assert e["loc"] == ["tasks", 100, "after"]
    assert "101" in e["msg"]


def test_long_chain_under_custom_limits_does_not_recurse():
    n = 1000
    chain = [task("t0")] + [task(f"t{i}", after=[f"t{i - 1}"]) for i in range(1, n)]
    spec = check(body(*reversed(chain)), limits=WorkflowLimits(max_depth=n))
    assert topological_order(spec) == [f"t{i}" for i in range(n)]
    cyclic = [task("t0", after=[f"t{n - 1}"])] + chain[1:]
    err = rejected(body(*cyclic), limits=WorkflowLimits(max_depth=n))
    assert [e["type"] for e in err.errors] == ["cycle"]


def test_expanded_count_limit():
    err = rejected(body(task("a", replicate=10000), task("b", replicate=10000), task("c")))
    (e,) = err.errors
    assert e["loc"] == ["tasks"]
    assert e["type"] == "too_many_instances"
    assert "20001" in e["msg"]


def test_args_too_large():
    big = {"blob": "x" * LIMITS.max_args_bytes}
    (e,) = rejected(body(task("a"), task("b", args=big))).errors
    assert e["loc"] == ["tasks", 1, "args"]
    assert e["type"] == "args_too_large"


def test_args_must_be_finite_json():
    (e,) = rejected(body(task("a", args={"x": float("nan")}))).errors
    assert e["loc"] == ["tasks", 0, "args"]


def test_unregistered_run():
    (e,) = rejected(body(task("a", run="builtin.shell"))).errors
    assert e["loc"] == ["tasks", 0, "run"]
    assert e["msg"].startswith("unknown task 'builtin.shell'; registered: builtin.cpu, builtin.echo, builtin.sleep")


def test_labels_no_pool_carries_all():
    # "onprem" alone is placeable, and so is {"cloud","gpu"}, but no pool has onprem+gpu.
    data = body(task("a"), task("b", labels=["gpu"]), labels=["onprem"])
    err = rejected(data)
    (e,) = err.errors
    assert e["loc"] == ["tasks", 1, "labels"]
    assert "gpu, onprem" in e["msg"] and "no pool carries all of them" in e["msg"]


def test_unlabelled_tasks_need_no_pool_labels():
    check(body(task("a")), pools=[frozenset({"gpu"})])


def test_custom_limits_tighten_model_bounds():
    limits = WorkflowLimits(max_tasks=2, max_replicate=5)
    err = rejected(body(task("a"), task("b", replicate=6), task("c")), limits=limits)
    assert {(e["type"], tuple(e["loc"])) for e in err.errors} == {
        ("too_many_tasks", ("tasks",)),
        ("replicate_too_large", ("tasks", 1, "replicate")),
    }


def test_many_cross_field_errors_collected_at_once():
    err = rejected(
        body(
            task("a", run="nope"),
            task("a", labels=["gpu"], args={"b": "x" * 70000}),
            task("c", after=["ghost", "c"]),
            task("d", after=["e"]),
            task("e", after=["d"]),
            labels=["onprem"],
        )
    )
    found = {(e["type"], tuple(e["loc"])) for e in err.errors}
    assert found == {
        ("unregistered_task", ("tasks", 0, "run")),
        ("duplicate_name", ("tasks", 1, "name")),
        ("args_too_large", ("tasks", 1, "args")),
        ("unplaceable_labels", ("tasks", 1, "labels")),
        ("unknown_dependency", ("tasks", 2, "after")),
        ("self_dependency", ("tasks", 2, "after")),
        ("cycle", ("tasks", 3, "after")),
    }
    lines = str(err).splitlines()
    assert len(lines) == len(err.errors) == 7
    assert any(line.startswith("tasks[0].run: unknown task 'nope'") for line in lines)
    assert any(line.startswith("tasks[3].after: cycle d -> e -> d") for line in lines)
    assert all(set(e) == {"loc", "msg", "type"} for e in err.errors)
    assert isinstance(err, ValueError)


def test_the_shipped_workflow_is_the_issue_example() -> None:
    """The demo, the API's example and config/s1-ortho.json all carry the issue's workflow."""
    from pathlib import Path

    from rm.demo import S1_ORTHO as DEMO

    shipped = json.loads((Path(__file__).resolve().parent.parent / "config" / "s1-ortho.json").read_text())
    assert DEMO == S1_ORTHO == shipped
