"""The state store, on SQLite and on PostgreSQL: rows, JSON and floats survive exactly."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from rm.lifecycle import change_status
from rm.models import ApiToken, Job, Node, NodeHistory, ScalingEvent, Task
from rm.states import NodeStatus
from rm.store import Store

TS = 1795000000.123456

NESTED: dict[str, Any] = {
    "seconds": 1.5,
    "count": 3,
    "big": 2**53 + 1,
    "negative": -17,
    "flag": True,
    "off": False,
    "nothing": None,
    "text": "héllo wörld — 日本語 ✓ 🚀",
    "quote\"and\\backslash": "line1\nline2\ttab",
    "list": [1, "two", 3.25, None, [4, [5, {"deep": ["deeper", {"deepest": "ß"}]}]]],
    "empty": {"d": {}, "l": []},
    "ключ": {"значение": "юникод"},
    "nul\x00key": "nul\x00value",  # JSON escapes it as \u0000: fine even on PostgreSQL json
}


def _columns(row: Any) -> dict[str, Any]:
    return {attr.key: getattr(row, attr.key) for attr in inspect(type(row)).column_attrs}


def _node(node_id: str, *, status: str = "idle", pool: str = "burst", **kw: Any) -> Node:
    values: dict[str, Any] = dict(
        id=node_id,
        cluster="demo",
        pool=pool,
        provider="local",
        status=status,
        slots=2,
        created_at=TS,
        updated_at=TS,
    )
    values.update(kw)
    return Node(**values)


def _job(job_id: str, **kw: Any) -> Job:
    values: dict[str, Any] = dict(id=job_id, name="wf", state="running", spec={"tasks": []}, created_at=TS)
    values.update(kw)
    return Job(**values)


def _task(task_id: str, job_id: str, **kw: Any) -> Task:
    values: dict[str, Any] = dict(
        id=task_id,
        job_id=job_id,
        name="t",
        index=0,
        run="builtin.sleep",
        args={"seconds": 0},
        queue="q",
        state="pending",
    )
    values.update(kw)
    return Task(**values)


# ------------------------------------------------------------------------------- round trips


def test_node_round_trip_all_columns(store: Store) -> None:
    node = _node(
        "node-1",
        status="busy",
        status_reason="a task started — ✓",
        labels=["cloud", "gpu"],
        provider_ref="i-0123456789abcdef0",
        worker="celery@node-1",
        running_tasks=2,
        registered_at=TS + 1,
        idle_since=TS + 3,
        ended_at=None,
        extra={"zone": "eu-west-1a", "tags": {"rm-cluster": "demo", "nested": NESTED}},
    )
    with store.session() as session:
        session.add(node)
        session.flush()  # Python-side defaults of columns added later are applied here
        expected = _columns(node)

    with store.session() as session:
        loaded = session.get(Node, "node-1")
        assert loaded is not None
        assert _columns(loaded) == expected


def test_node_defaults(store: Store) -> None:
    with store.session() as session:
        session.add(_node("n-defaults"))
    with store.session() as session:
        node = session.get(Node, "n-defaults")
        assert node is not None
        assert node.status_reason == ""
        assert node.labels == []
        assert node.extra == {}
        assert node.running_tasks == 0
        assert node.provider_ref is None and node.worker is None
        assert node.registered_at is None
        assert node.idle_since is None and node.ended_at is None


def test_node_history_round_trip(store: Store) -> None:
    with store.session() as session:
        session.add(_node("n-h", status="requested"))
    rows = [
        ("requested", "provisioning", "the actuator handed the launch — ✓", TS + 0.5),
        ("provisioning", "booting", "vm exists", TS + 1.25),
        ("booting", "idle", "registered", TS + 2.000001),
    ]
    with store.session() as session:
        for a, b, reason, at in rows:
            session.add(NodeHistory(node_id="n-h", from_status=a, to_status=b, reason=reason, at=at))
    with store.session() as session:
        history = session.scalars(select(NodeHistory).where(NodeHistory.node_id == "n-h").order_by(NodeHistory.id))
        got = [(h.from_status, h.to_status, h.reason, h.at) for h in history]
    assert got == rows


def test_change_status_works_on_both_backends(store: Store) -> None:
    with store.session() as session:
        session.add(_node("n-cs", status="requested"))
    path = [NodeStatus.PROVISIONING, NodeStatus.BOOTING, NodeStatus.IDLE, NodeStatus.LOST]
    for i, target in enumerate(path):
        with store.session() as session:
            node = session.get(Node, "n-cs")
            assert node is not None
            change_status(session, node, target, f"step {i}", now=TS + i)
    with store.session() as session:
        node = session.get(Node, "n-cs")
        assert node is not None
        assert node.status == "lost"
        assert node.ended_at == TS + 3
        history = list(session.scalars(select(NodeHistory).order_by(NodeHistory.id)))
    assert [h.to_status for h in history] == [s.value for s in path]
    assert [h.at for h in history] == [TS + i for i in range(4)]


def test_job_and_tasks_round_trip(store: Store) -> None:
    job_id = uuid.uuid4().hex
    spec = {"name": "pipeline ✓", "tasks": [{"name": "a", "run": "builtin.sleep", "args": NESTED}]}
    job = _job(job_id, name="pipeline — ✓", owner="alice@example.org", spec=spec, error=None,
               started_at=TS + 1, finished_at=TS + 2)
    tasks = [
        _task(
            f"{job_id}-a-{i}",
            job_id,
            name="a",
            index=i,
            run="builtin.sleep",
            args={"i": i, "payload": NESTED},
            after=["prep", "other-step"],
            labels=["gpu"],
            queue="rm.gpu.p5",
            state="succeeded",
            node_id="node-7",
            attempts=2,
            max_retries=3,
            timeout_s=12.5,
            result={"out": [i, i * 1.5, "résultat"], "nested": NESTED},
            error=None,
            completions=1,
            queued_at=TS,
            started_at=TS + 0.25,
            finished_at=TS + 0.75,
        )
        for i in range(3)
    ]
    with store.session() as session:
        session.add(job)
        session.flush()  # the parent first, for the foreign key on PostgreSQL and SQLite alike
        session.add_all(tasks)
        session.flush()  # Python-side defaults of columns not set above are applied here
        expected_job = _columns(job)
        expected_tasks = [_columns(t) for t in tasks]

    with store.session() as session:
        loaded_job = session.get(Job, job_id)
        assert loaded_job is not None
        assert _columns(loaded_job) == expected_job
        loaded = list(session.scalars(select(Task).where(Task.job_id == job_id).order_by(Task.index)))
        assert [_columns(t) for t in loaded] == expected_tasks
        by_name = session.scalars(select(Task).where(Task.job_id == job_id, Task.name == "a")).all()
        assert len(by_name) == 3


@pytest.mark.parametrize(
    "result",
    [
        None,
        0,
        -1.5,
        "just a string ✓",
        [1, [2, [3, [4]]]],
        {"a": {"b": {"c": {"d": [None, True, "日本"]}}}},
        NESTED,
        [],
        {},
    ],
    ids=lambda v: type(v).__name__,
)
def test_task_result_json_round_trip(store: Store, result: Any) -> None:
    with store.session() as session:
        session.add(_job("j1"))
        session.flush()
        session.add(_task("t1", "j1", result=result, args={"wrapped": result}))
    with store.session() as session:
        task = session.get(Task, "t1")
        assert task is not None
        assert task.result == result
        assert task.args == {"wrapped": result}


def test_task_defaults(store: Store) -> None:
    with store.session() as session:
        session.add(_job("j1"))
        session.flush()
        session.add(_task("t1", "j1"))
    with store.session() as session:
        task = session.get(Task, "t1")
        assert task is not None
        assert task.after == [] and task.labels == []
        assert task.result is None and task.error is None and task.node_id is None
        assert (task.attempts, task.max_retries, task.completions) == (0, 0, 0)
        assert task.timeout_s is None and task.queued_at is None


def test_task_without_result_can_be_inserted(store: Store) -> None:
    with store.session() as session:
        session.add(_job("j1"))
        session.flush()
        session.add(_task("t1", "j1"))  # a freshly planned task has no result yet
    with store.session() as session:
        task = session.get(Task, "t1")
        assert task is not None
        assert task.result is None


def test_json_column_update_is_persisted_when_reassigned(store: Store) -> None:
    with store.session() as session:
        session.add(_node("n-json", extra={"a": 1}))
    with store.session() as session:
        node = session.get(Node, "n-json")
        assert node is not None
        node.extra = {**node.extra, "b": {"c": ["ü"]}}
    with store.session() as session:
        node = session.get(Node, "n-json")
        assert node is not None
        assert node.extra == {"a": 1, "b": {"c": ["ü"]}}


def test_events_round_trip(store: Store) -> None:
    events = [
        ScalingEvent(at=TS, kind="scale_up", cause="demand", pool="burst", message="launch 2 nodes ✓",
                     data={"needed_slots": 4, "nodes": ["n1", "n2"], "nested": NESTED}),
        ScalingEvent(at=TS + 1.5, kind="node_lost", cause="heartbeat", pool="burst", node_id="n1",
                     job_id="j" * 32, task_id="t" * 64, message="heartbeats stopped — 心拍"),
        ScalingEvent(at=TS + 3, kind="budget", cause="limit", message="no pool"),
    ]
    with store.session() as session:
        session.add_all(events)
        session.flush()
        expected = [_columns(e) for e in events]
    with store.session() as session:
        loaded = list(session.scalars(select(ScalingEvent).order_by(ScalingEvent.at)))
        assert [_columns(e) for e in loaded] == expected
        assert loaded[2].data == {} and loaded[2].pool is None and loaded[2].node_id is None
        assert [e.id for e in loaded] == sorted(e.id for e in loaded)
        by_kind = session.scalars(select(ScalingEvent).where(ScalingEvent.kind == "node_lost")).one()
        assert by_kind.node_id == "n1"
        by_pool = session.scalars(select(ScalingEvent).where(ScalingEvent.pool == "burst")).all()
        assert len(by_pool) == 2


def test_tokens_round_trip(store: Store) -> None:
    with store.session() as session:
        session.add(ApiToken(name="admin", role="admin", token_hash="a" * 128, created_at=TS))
        session.add(ApiToken(name="ci-bot ✓", role="user", token_hash="b" * 64, created_at=TS + 1))
    with store.session() as session:
        tokens = list(session.scalars(select(ApiToken).order_by(ApiToken.name)))
        assert [(t.name, t.role, t.token_hash, t.created_at) for t in tokens] == [
            ("admin", "admin", "a" * 128, TS),
            ("ci-bot ✓", "user", "b" * 64, TS + 1),
        ]
        found = session.scalars(select(ApiToken).where(ApiToken.token_hash == "b" * 64)).one()
        assert found.name == "ci-bot ✓"


# --------------------------------------------------------------------------- transactions


def test_session_commits_on_success(store: Store) -> None:
    with store.session() as session:
        session.add(_node("n-ok"))
    with store.session() as session:
        assert session.get(Node, "n-ok") is not None


class _Boom(Exception):
    pass


def test_session_rolls_back_on_exception(store: Store) -> None:
    with store.session() as session:
        session.add(_node("kept"))
    with pytest.raises(_Boom):
        with store.session() as session:
            session.add(_node("n-rolled-back"))
            session.add(_job("j-rolled-back"))
            session.flush()  # even rows already sent to the database must vanish
            session.add(ScalingEvent(at=TS, kind="k", cause="c", message="m"))
            node = session.get(Node, "kept")
            assert node is not None
            node.status = "busy"
            session.flush()
            raise _Boom
    with store.session() as session:
        assert session.get(Node, "n-rolled-back") is None
        assert session.get(Job, "j-rolled-back") is None
        assert session.scalar(select(func.count()).select_from(ScalingEvent)) == 0
        assert session.scalar(select(func.count()).select_from(Node)) == 1
        kept = session.get(Node, "kept")
        assert kept is not None and kept.status == "idle"


def test_session_rolls_back_on_base_exception(store: Store) -> None:
    with pytest.raises(KeyboardInterrupt):
        with store.session() as session:
            session.add(_node("n-kbd"))
            session.flush()
            raise KeyboardInterrupt
    with store.session() as session:
        assert session.get(Node, "n-kbd") is None


def test_unique_token_hash_enforced(store: Store) -> None:
    with store.session() as session:
        session.add(ApiToken(name="first", role="admin", token_hash="h" * 64, created_at=TS))
    with pytest.raises(IntegrityError):
        with store.session() as session:
            session.add(ApiToken(name="second", role="user", token_hash="h" * 64, created_at=TS))
            session.add(_node("n-same-tx"))  # rolled back together with the duplicate
    with store.session() as session:
        tokens = session.scalars(select(ApiToken)).all()
        assert [(t.name, t.token_hash) for t in tokens] == [("first", "h" * 64)]
        assert session.get(Node, "n-same-tx") is None
    # the store is still usable after the failed commit
    with store.session() as session:
        session.add(ApiToken(name="second", role="user", token_hash="i" * 64, created_at=TS))
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(ApiToken)) == 2


def test_unique_token_name_enforced(store: Store) -> None:
    with store.session() as session:
        session.add(ApiToken(name="same", role="admin", token_hash="x" * 64, created_at=TS))
    with pytest.raises(IntegrityError):
        with store.session() as session:
            session.add(ApiToken(name="same", role="user", token_hash="y" * 64, created_at=TS))


def test_duplicate_node_id_rejected(store: Store) -> None:
    with store.session() as session:
        session.add(_node("dup"))
    with pytest.raises(IntegrityError):
        with store.session() as session:
            session.add(_node("dup", status="busy"))
    with store.session() as session:
        node = session.get(Node, "dup")
        assert node is not None and node.status == "idle"


def test_foreign_keys_enforced(store: Store) -> None:
    with pytest.raises(IntegrityError):
        with store.session() as session:
            session.add(NodeHistory(node_id="no-such-node", from_status="a", to_status="b", reason="r", at=TS))
    with pytest.raises(IntegrityError):
        with store.session() as session:
            session.add(_task("orphan", "no-such-job"))


# ------------------------------------------------------------------------------ floats


@pytest.mark.parametrize(
    "value",
    [TS, 1795000000.0, 0.1, 1e-300, 1.7976931348623157e308, -TS, 2.0**53, 5e-324, 1 / 3],
    ids=repr,
)
def test_float_timestamps_round_trip_exactly(store: Store, value: float) -> None:
    with store.session() as session:
        session.add(_node("n-float", created_at=value, updated_at=value, ended_at=value))
        session.add(ScalingEvent(at=value, kind="k", cause="c", message="m"))
        session.add(ApiToken(name="t", role="user", token_hash="z", created_at=value))
        session.flush()
        session.add(NodeHistory(node_id="n-float", from_status="a", to_status="b", reason="r", at=value))
    with store.session() as session:
        node = session.get(Node, "n-float")
        assert node is not None
        for got in (
            node.created_at,
            node.updated_at,
            node.ended_at,
            session.scalars(select(ScalingEvent.at)).one(),
            session.scalars(select(ApiToken.created_at)).one(),
            session.scalars(select(NodeHistory.at)).one(),
        ):
            assert type(got) is float
            assert got == value, f"{got!r} != {value!r}"


def test_float_timestamp_filters_exactly(store: Store) -> None:
    with store.session() as session:
        session.add_all(ScalingEvent(at=TS + i * 1e-6, kind="k", cause="c", message=str(i)) for i in range(5))
    with store.session() as session:
        hit = session.scalars(select(ScalingEvent).where(ScalingEvent.at == TS + 2e-6)).one()
        assert hit.message == "2"
        later = session.scalars(select(ScalingEvent.message).where(ScalingEvent.at > TS + 2e-6)).all()
        assert sorted(later) == ["3", "4"]


_ids = itertools.count()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(
        st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
        children,
        max_size=4,
    ),
    max_leaves=20,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    at=st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False),
    payload=st.dictionaries(st.text(max_size=8), json_values, max_size=5),
)
def test_property_json_and_float_round_trip(store: Store, at: float, payload: dict[str, Any]) -> None:
    node_id = f"prop-{next(_ids)}"
    with store.session() as session:
        session.add(_node(node_id, created_at=at, updated_at=at, extra=payload, labels=[payload]))
    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        assert node.created_at == at
        assert node.extra == payload
        assert node.labels == [payload]


# ------------------------------------------------------------------------------ queries


def test_query_nodes_by_status_and_pool(store: Store) -> None:
    layout = [
        ("on-1", "onprem", "idle"),
        ("on-2", "onprem", "busy"),
        ("b-1", "burst", "idle"),
        ("b-2", "burst", "booting"),
        ("b-3", "burst", "terminated"),
        ("b-4", "burst", "idle"),
    ]
    with store.session() as session:
        session.add_all(_node(i, pool=p, status=s) for i, p, s in layout)
    with store.session() as session:
        def ids(*where: Any) -> list[str]:
            return sorted(session.scalars(select(Node.id).where(*where)))

        assert ids(Node.status == "idle") == ["b-1", "b-4", "on-1"]
        assert ids(Node.pool == "burst") == ["b-1", "b-2", "b-3", "b-4"]
        assert ids(Node.pool == "burst", Node.status == "idle") == ["b-1", "b-4"]
        live = [s.value for s in NodeStatus if s.value not in {"terminated", "failed", "lost"}]
        assert ids(Node.pool == "burst", Node.status.in_(live)) == ["b-1", "b-2", "b-4"]
        assert ids(Node.status == "draining") == []
        counts = {pool: n for pool, n in session.execute(select(Node.pool, func.count()).group_by(Node.pool))}
        assert counts == {"onprem": 2, "burst": 4}


# ------------------------------------------------------------------------------ schema, restart


def test_upgrade_schema_is_idempotent(store: Store) -> None:
    with store.session() as session:
        session.add(_node("before"))
    store.upgrade_schema()
    store.upgrade_schema()
    with store.session() as session:
        assert session.get(Node, "before") is not None
        session.add(_node("after"))
    with store.session() as session:
        assert session.scalar(select(func.count()).select_from(Node)) == 2


def test_schema_has_all_tables(store: Store) -> None:
    names = set(inspect(store.engine).get_table_names())
    assert {"nodes", "node_history", "jobs", "tasks", "events", "api_tokens"} <= names


def test_two_stores_on_same_url_see_each_others_commits(store: Store) -> None:
    other = Store(store.url)
    try:
        other.upgrade_schema()  # a restarted manager calls it again: harmless
        with store.session() as session:
            session.add(_node("from-first", extra={"who": "first ✓"}))
        with other.session() as session:
            node = session.get(Node, "from-first")
            assert node is not None and node.extra == {"who": "first ✓"}
            session.add(_node("from-second", created_at=TS, updated_at=TS))
        with store.session() as session:
            node = session.get(Node, "from-second")
            assert node is not None and node.created_at == TS
    finally:
        other.dispose()


def test_uncommitted_rows_are_invisible_to_another_store(store: Store) -> None:
    other = Store(store.url)
    try:
        with store.session() as session:
            session.add(_node("pending"))
            session.flush()
            with other.session() as other_session:
                assert other_session.get(Node, "pending") is None
        with other.session() as other_session:
            assert other_session.get(Node, "pending") is not None
    finally:
        other.dispose()


def test_restart_survival(store: Store) -> None:
    with store.session() as session:
        session.add(_node("survivor", status="busy", extra={"k": ["v", 1, 2.5]}, updated_at=TS))
        session.add(ApiToken(name="admin", role="admin", token_hash="hash", created_at=TS))
    store.dispose()  # the manager process goes away...

    restarted = Store(store.url)  # ...and a new one starts on the same database
    try:
        restarted.upgrade_schema()
        with restarted.session() as session:
            node = session.get(Node, "survivor")
            assert node is not None
            assert (node.status, node.extra, node.updated_at) == ("busy", {"k": ["v", 1, 2.5]}, TS)
            assert session.scalars(select(ApiToken.token_hash)).one() == "hash"
    finally:
        restarted.dispose()


def test_longest_task_ids_fit_the_columns(store: Store) -> None:
    """Task ids are ``<32-hex job id>.<name of up to 64>.<index>``; celery ids add ``-<attempt>``."""
    job_id = "f" * 32
    task_id = f"{job_id}.{'n' * 64}.19999"
    with store.session() as session:
        session.add(_job(job_id))
        session.flush()
        session.add(_task(task_id, job_id, celery_id=f"{task_id}-11"))
    with store.session() as session:
        assert session.get(Task, task_id).celery_id == f"{task_id}-11"
