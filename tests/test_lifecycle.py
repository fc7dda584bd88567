"""The node lifecycle: the transition table, edge by edge, on real rows in a SQLite store."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from rm.lifecycle import IllegalTransition, can_move, change_status
from rm.models import Node, NodeHistory
from rm.states import LIVE, REGISTERED, SERVING, TERMINAL, TRANSITIONS, NodeStatus
from rm.store import Store

S = NodeStatus
T0 = 1_795_000_000.25  # creation time of every test node
T1 = 1_795_000_042.125  # time of the move under test

ALL_PAIRS = list(itertools.product(NodeStatus, NodeStatus))
ALLOWED = [(a, b) for a, b in ALL_PAIRS if b in TRANSITIONS[a]]
DISALLOWED = [(a, b) for a, b in ALL_PAIRS if b not in TRANSITIONS[a]]

HAPPY_PATH = [
    S.REQUESTED,
    S.PROVISIONING,
    S.BOOTING,
    S.IDLE,
    S.BUSY,
    S.IDLE,
    S.DRAINING,
    S.TERMINATING,
    S.TERMINATED,
]


def _pair_id(pair: tuple[NodeStatus, NodeStatus]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def _make_node(store: Store, status: NodeStatus, node_id: str | None = None) -> str:
    node_id = node_id or f"n-{uuid.uuid4().hex[:12]}"
    with store.session() as session:
        session.add(
            Node(
                id=node_id,
                cluster="demo",
                pool="burst",
                provider="local",
                status=status.value,
                status_reason="created for the test",
                slots=2,
                created_at=T0,
                updated_at=T0,
            )
        )
    return node_id


def _history(store: Store, node_id: str) -> list[NodeHistory]:
    with store.session() as session:
        stmt = select(NodeHistory).where(NodeHistory.node_id == node_id).order_by(NodeHistory.id)
        return list(session.scalars(stmt))


# --------------------------------------------------------------------------- the table itself


def test_every_status_has_a_row_in_the_table() -> None:
    assert set(TRANSITIONS) == set(NodeStatus)
    for exits in TRANSITIONS.values():
        assert set(exits) <= set(NodeStatus)


def test_pairs_cover_the_whole_square() -> None:
    n = len(NodeStatus)
    assert len(ALL_PAIRS) == n * n
    assert len(ALLOWED) + len(DISALLOWED) == n * n
    assert len(ALLOWED) == sum(len(exits) for exits in TRANSITIONS.values())


def test_terminal_statuses() -> None:
    assert TERMINAL == {S.TERMINATED, S.FAILED, S.LOST}
    for status in TERMINAL:
        assert TRANSITIONS[status] == {}, f"terminal {status} has exits"
        for target in NodeStatus:
            assert not can_move(status, target)


def test_no_self_loops() -> None:
    for status in NodeStatus:
        assert status not in TRANSITIONS[status]
        assert not can_move(status, status)


def test_status_sets_are_consistent() -> None:
    assert LIVE == frozenset(NodeStatus) - TERMINAL
    assert LIVE.isdisjoint(TERMINAL)
    assert SERVING <= LIVE
    assert REGISTERED <= LIVE
    assert S.DRAINING not in SERVING  # a draining node is going away: no capacity to count on
    assert REGISTERED == {S.IDLE, S.BUSY, S.DRAINING}


def _reachable(start: NodeStatus) -> set[NodeStatus]:
    seen: set[NodeStatus] = set()
    todo = [start]
    while todo:
        status = todo.pop()
        for nxt in TRANSITIONS[status]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("status", sorted(set(NodeStatus) - TERMINAL), ids=str)
def test_every_non_terminal_status_can_reach_a_terminal_status(status: NodeStatus) -> None:
    assert _reachable(status) & TERMINAL, f"{status} is a dead end"


@pytest.mark.parametrize("status", sorted(set(NodeStatus) - TERMINAL), ids=str)
def test_every_non_terminal_status_can_reach_terminated(status: NodeStatus) -> None:
    """Not only 'some' terminal: a clean shutdown is possible from every non-terminal status."""
    assert S.TERMINATED in _reachable(status), f"{status} cannot be terminated cleanly"


def test_every_status_is_reachable_from_requested() -> None:
    assert _reachable(S.REQUESTED) | {S.REQUESTED} == set(NodeStatus)


def test_happy_path_edges_are_in_the_table() -> None:
    for a, b in itertools.pairwise(HAPPY_PATH):
        assert can_move(a, b), f"{a} -> {b}"


@pytest.mark.parametrize("pair", ALLOWED, ids=_pair_id)
def test_every_edge_has_a_comment(pair: tuple[NodeStatus, NodeStatus]) -> None:
    comment = TRANSITIONS[pair[0]][pair[1]]
    assert isinstance(comment, str)
    assert comment.strip(), f"edge {_pair_id(pair)} has no comment"


@pytest.mark.parametrize("pair", ALL_PAIRS, ids=_pair_id)
def test_can_move_matches_table(pair: tuple[NodeStatus, NodeStatus]) -> None:
    assert can_move(*pair) is (pair[1] in TRANSITIONS[pair[0]])


# --------------------------------------------------------------------------- edge by edge


@pytest.fixture
def lifecycle_store(sqlite_store: Store) -> Store:
    return sqlite_store


@pytest.mark.parametrize("pair", ALLOWED, ids=_pair_id)
def test_allowed_move(lifecycle_store: Store, pair: tuple[NodeStatus, NodeStatus]) -> None:
    store = lifecycle_store
    current, target = pair
    node_id = _make_node(store, current)
    reason = f"test move {current.value} -> {target.value} ✓"

    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        change_status(session, node, target, reason, now=T1)
        # Visible in the same transaction, before commit.
        assert node.status == target.value

    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        assert node.status == target.value
        assert node.status_reason == reason
        assert node.updated_at == T1
        assert node.created_at == T0
        if target in TERMINAL:
            assert node.ended_at == T1
        else:
            assert node.ended_at is None

    history = _history(store, node_id)
    assert len(history) == 1
    (row,) = history
    assert (row.node_id, row.from_status, row.to_status, row.reason, row.at) == (
        node_id,
        current.value,
        target.value,
        reason,
        T1,
    )


@pytest.mark.parametrize("pair", DISALLOWED, ids=_pair_id)
def test_disallowed_move(lifecycle_store: Store, pair: tuple[NodeStatus, NodeStatus]) -> None:
    store = lifecycle_store
    current, target = pair
    node_id = _make_node(store, current)

    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        with pytest.raises(IllegalTransition) as info:
            change_status(session, node, target, "should be refused", now=T1)
        # Nothing changed in memory nor queued for the database, even before any rollback.
        assert node.status == current.value
        assert node.status_reason == "created for the test"
        assert node.updated_at == T0
        assert node.ended_at is None
        assert not session.new
        assert not session.dirty
        count = session.scalar(select(func.count()).select_from(NodeHistory))
        assert count == 0

    message = str(info.value)
    assert node_id in message
    assert current.value in message and target.value in message
    assert isinstance(info.value, ValueError)

    # And nothing was committed (the session above committed normally after the caught error).
    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        assert node.status == current.value
        assert node.updated_at == T0
        assert node.ended_at is None
    assert _history(store, node_id) == []


def test_illegal_move_escaping_the_session_rolls_back_earlier_moves(lifecycle_store: Store) -> None:
    store = lifecycle_store
    node_id = _make_node(store, S.REQUESTED)
    with pytest.raises(IllegalTransition):
        with store.session() as session:
            node = session.get(Node, node_id)
            assert node is not None
            change_status(session, node, S.PROVISIONING, "launch", now=T1)
            change_status(session, node, S.IDLE, "skip booting: illegal", now=T1 + 1)
    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        assert node.status == S.REQUESTED.value
    assert _history(store, node_id) == []


# --------------------------------------------------------------------------- paths


def test_happy_path(lifecycle_store: Store) -> None:
    store = lifecycle_store
    node_id = _make_node(store, S.REQUESTED)
    times = [T0 + 10 * (i + 1) for i in range(len(HAPPY_PATH) - 1)]

    for (current, target), now in zip(itertools.pairwise(HAPPY_PATH), times, strict=True):
        with store.session() as session:
            node = session.get(Node, node_id)
            assert node is not None
            assert node.status == current.value
            change_status(session, node, target, f"to {target.value}", now=now)

    history = _history(store, node_id)
    assert len(history) == 8
    assert [(h.from_status, h.to_status) for h in history] == [
        (a.value, b.value) for a, b in itertools.pairwise(HAPPY_PATH)
    ]
    assert [h.reason for h in history] == [f"to {s.value}" for s in HAPPY_PATH[1:]]
    assert [h.at for h in history] == times
    # consecutive rows chain
    for before, after in itertools.pairwise(history):
        assert before.to_status == after.from_status

    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        assert node.status == S.TERMINATED.value
        assert node.ended_at == times[-1]
        assert node.updated_at == times[-1]
        assert node.status_reason == "to terminated"


def test_happy_path_in_one_transaction(lifecycle_store: Store) -> None:
    store = lifecycle_store
    node_id = _make_node(store, S.REQUESTED)
    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        for i, target in enumerate(HAPPY_PATH[1:]):
            change_status(session, node, target, f"step {i}", now=T1 + i)
    history = _history(store, node_id)
    assert [h.to_status for h in history] == [s.value for s in HAPPY_PATH[1:]]
    assert [h.at for h in history] == [T1 + i for i in range(8)]


@pytest.fixture(scope="module")
def walk_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path: Path = tmp_path_factory.mktemp("walks") / "rm.db"
    store = Store(f"sqlite:///{path}")
    store.upgrade_schema()
    yield store
    store.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_walks_record_every_move(walk_store: Store, data: st.DataObject) -> None:
    """Any sequence of attempted moves: legal ones are applied and logged, illegal ones change nothing."""
    store = walk_store
    start = data.draw(st.sampled_from(list(NodeStatus)), label="start")
    node_id = _make_node(store, start)
    attempts = data.draw(st.lists(st.sampled_from(list(NodeStatus)), max_size=12), label="attempts")

    status = start
    expected: list[tuple[str, str, float]] = []
    ended_at = None
    for i, target in enumerate(attempts):
        now = T1 + i
        with store.session() as session:
            node = session.get(Node, node_id)
            assert node is not None
            if can_move(status, target):
                change_status(session, node, target, f"attempt {i}", now=now)
                expected.append((status.value, target.value, now))
                status = target
                if target in TERMINAL:
                    ended_at = now
            else:
                with pytest.raises(IllegalTransition):
                    change_status(session, node, target, f"attempt {i}", now=now)

    with store.session() as session:
        node = session.get(Node, node_id)
        assert node is not None
        assert node.status == status.value
        assert node.ended_at == ended_at
        assert (node.ended_at is not None) == (status in TERMINAL and bool(expected))
    assert [(h.from_status, h.to_status, h.at) for h in _history(store, node_id)] == expected
