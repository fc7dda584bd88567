"""Schema migrations: the revisions make exactly the models' schema and never lose a row.

Each test runs on a fresh SQLite file and on a fresh PostgreSQL database. The rows written at the
baseline are literal (the baseline's columns are frozen), so an upgrade that drops, renames or
rewrites anything they hold fails here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect, select, text
from typer.testing import CliRunner

from rm import schema
from rm.cli import app
from rm.models import Base
from rm.store import Store

#: One literal row per table of the baseline schema, in foreign-key order.
BASELINE_ROWS: dict[str, list[dict[str, Any]]] = {
    "nodes": [{"id": "burst-1", "cluster": "demo", "pool": "burst", "provider": "local", "status": "busy",
               "status_reason": "a task started", "slots": 2, "labels": ["gpu"], "provider_ref": "pid:42",
               "worker": "burst-1@demo", "running_tasks": 1, "created_at": 1.5, "updated_at": 2.5,
               "registered_at": 2.0, "idle_since": None, "ended_at": None, "extra": {"k": "v ✓"}}],
    "node_history": [{"id": 1, "node_id": "burst-1", "from_status": "idle", "to_status": "busy",
                      "reason": "a task started", "at": 2.5}],
    "jobs": [{"id": "j1", "name": "burst", "owner": "alice", "state": "running", "spec": {"tasks": []},
              "error": None, "created_at": 1.0, "started_at": 1.1, "finished_at": None}],
    "tasks": [{"id": "j1.s.0", "celery_id": "j1.s.0.1", "publishes": 1, "job_id": "j1", "name": "s", "index": 0,
               "seq": 0, "run": "builtin.sleep", "args": {"seconds": 1}, "after": [], "labels": [],
               "queue": "rm.demo", "state": "running", "node_id": "burst-1", "attempts": 1, "max_retries": 2,
               "timeout_s": 60.0, "result": None, "error": None, "completions": 0, "queued_at": 1.2,
               "started_at": 1.3, "finished_at": None}],
    "events": [{"id": 1, "at": 1.0, "kind": "launch", "cause": "demand", "pool": "burst", "node_id": "burst-1",
                "job_id": "j1", "task_id": None, "message": "launch 1 node(s) in pool burst", "data": {"n": 1}}],
    "api_tokens": [{"id": 1, "name": "admin", "role": "admin", "token_hash": "h" * 64, "created_at": 1.0}],
    "bootstrap_tokens": [{"node_id": "burst-1", "token_hash": "b" * 64, "expires_at": 100.0, "used_at": None}],
    "ledger": [{"id": 1, "node_id": "burst-1", "pool": "burst", "provider": "local", "currency": "EUR",
                "price_per_hour": "0.40", "unit_s": 1, "minimum_s": 60, "slots": 2, "started_at": 1.5,
                "ended_at": None, "billed_s": None, "cost": None, "end_reason": None}],
    "budget_alerts": [{"id": 1, "scope": "global", "period_start": 0.0, "threshold": "0.5", "committed": "1.00",
                       "amount": "2.00", "at": 3.0}],
    "policy_versions": [{"id": 1, "at": 4.0, "by": "admin", "changes": [{"path": "policy.tick_s"}],
                         "document": {"policy": {}}}],
}


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store on a database with no table at all (the schema is the test's business)."""
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    store = Store(url)
    try:
        yield store
    finally:
        store.dispose()


def upgrade_to(store: Store, revision: str) -> None:
    with store.engine.begin() as connection:
        command.upgrade(schema.alembic_config(connection), revision)


def write_rows(store: Store, rows: dict[str, list[dict[str, Any]]]) -> None:
    tables = _reflect(store)
    with store.engine.begin() as connection:
        for name, table_rows in rows.items():
            connection.execute(tables[name].insert(), table_rows)


def read_rows(store: Store, names: list[str]) -> dict[str, list[dict[str, Any]]]:
    tables = _reflect(store)
    with store.engine.connect() as connection:
        return {name: [dict(r._mapping) for r in connection.execute(select(tables[name]).order_by(*tables[name].primary_key))]
                for name in names}


def _reflect(store: Store) -> dict[str, Any]:
    metadata = MetaData()
    metadata.reflect(store.engine)
    return metadata.tables


def schema_differences(store: Store) -> list[Any]:
    with store.engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


# -- the revisions make the models' schema ---------------------------------------------------------
def test_migrated_schema_is_exactly_the_models(empty_store: Store) -> None:
    empty_store.upgrade_schema()
    assert schema.current(empty_store.engine) == schema.head()
    assert schema_differences(empty_store) == []


def test_the_comparison_sees_a_missing_index(empty_store: Store) -> None:
    """The check above can fail: drop one index and it is reported."""
    empty_store.upgrade_schema()
    with empty_store.engine.begin() as connection:
        connection.execute(text("DROP INDEX ix_tasks_job_state"))
    differences = schema_differences(empty_store)
    assert [d[0] for d in differences] == ["add_index"]
    assert differences[0][1].name == "ix_tasks_job_state"


def test_the_baseline_rows_cover_every_baseline_table(empty_store: Store) -> None:
    upgrade_to(empty_store, schema.BASELINE)
    assert set(inspect(empty_store.engine).get_table_names()) - {"alembic_version"} == set(BASELINE_ROWS)


# -- no row lost ---------------------------------------------------------------------------------
def test_upgrading_from_the_baseline_loses_no_row(empty_store: Store) -> None:
    upgrade_to(empty_store, schema.BASELINE)
    write_rows(empty_store, BASELINE_ROWS)
    before = read_rows(empty_store, list(BASELINE_ROWS))
    assert all(len(rows) == 1 for rows in before.values())

    empty_store.upgrade_schema()

    assert schema.current(empty_store.engine) == schema.head()
    after = read_rows(empty_store, list(BASELINE_ROWS))
    for name, rows in before.items():  # columns a later revision adds are allowed; none of these may change
        assert [{k: row[k] for k in rows[0]} for row in after[name]] == rows, name


def test_a_create_all_database_is_stamped_at_the_baseline_then_upgraded(
    empty_store: Store, caplog: pytest.LogCaptureFixture,
) -> None:
    # What releases before migrations did: create_all of the baseline tables, no alembic_version.
    Base.metadata.create_all(empty_store.engine, tables=[Base.metadata.tables[name] for name in BASELINE_ROWS])
    write_rows(empty_store, BASELINE_ROWS)
    before = read_rows(empty_store, list(BASELINE_ROWS))
    assert schema.current(empty_store.engine) is None

    with caplog.at_level(logging.WARNING, logger="rm.schema"):
        empty_store.upgrade_schema()

    assert "stamping it at the baseline 0001_baseline" in caplog.text
    assert schema.current(empty_store.engine) == schema.head()
    assert schema_differences(empty_store) == []
    after = read_rows(empty_store, list(BASELINE_ROWS))
    assert {n: [{k: r[k] for k in rows[0]} for r in after[n]] for n, rows in before.items()} == before


def test_upgrade_is_idempotent_and_keeps_rows(empty_store: Store) -> None:
    empty_store.upgrade_schema()
    write_rows(empty_store, {"jobs": BASELINE_ROWS["jobs"]})
    assert schema.upgrade(empty_store.engine) == schema.head()  # started at head: nothing ran
    assert len(read_rows(empty_store, ["jobs"])["jobs"]) == 1


@pytest.mark.postgres
def test_two_managers_upgrading_one_postgres_database_together_both_succeed(postgres_url: str) -> None:
    stores = [Store(postgres_url), Store(postgres_url)]
    errors: list[BaseException] = []

    def run(store: Store) -> None:
        try:
            store.upgrade_schema()
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(store,)) for store in stores]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert errors == []
        assert schema.current(stores[0].engine) == schema.head()
        assert schema_differences(stores[0]) == []
    finally:
        for store in stores:
            store.dispose()


# -- rmctl db ----------------------------------------------------------------------------------------
def test_rmctl_db_current_upgrade_history(sqlite_url: str) -> None:
    runner = CliRunner()
    behind = runner.invoke(app, ["db", "current", "--database", sqlite_url])
    assert behind.exit_code == 1 and "none (behind" in behind.output

    upgraded = runner.invoke(app, ["db", "upgrade", "--database", sqlite_url])
    assert upgraded.exit_code == 0, upgraded.output
    assert f"upgraded from empty to {schema.head()}" in upgraded.output

    again = runner.invoke(app, ["db", "upgrade", "--database", sqlite_url])
    assert "already at the newest revision" in again.output
    current = runner.invoke(app, ["db", "current", "--database", sqlite_url])
    assert current.exit_code == 0 and f"{schema.head()} (head)" in current.output

    history = runner.invoke(app, ["db", "history"])
    assert history.exit_code == 0 and schema.BASELINE in history.output


def test_rmctl_db_reads_the_database_from_the_config(tmp_path, demo_yaml_text: str) -> None:  # noqa: ANN001
    path = tmp_path / "cluster.yaml"
    path.write_text(demo_yaml_text.replace("sqlite:///rm-demo.db", f"sqlite:///{tmp_path}/from-config.db"))
    result = CliRunner().invoke(app, ["db", "upgrade", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "from-config.db").exists()


def test_rmctl_db_without_a_database_says_which_options(tmp_path) -> None:  # noqa: ANN001
    result = CliRunner().invoke(app, ["db", "current"])
    assert result.exit_code == 2 and "--config or --database" in result.output
