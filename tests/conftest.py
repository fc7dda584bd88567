"""Shared fixtures: a state store on both supported databases, and the demo config text.

The ``store`` fixture runs each test that uses it once on SQLite (a fresh file under
``tmp_path``) and once on PostgreSQL (a fresh, uniquely named database on the local server,
dropped afterwards). An unreachable PostgreSQL server is a test *failure*, because a silent
skip would hide that half of the portability contract was never checked; set
``RM_SKIP_POSTGRES=1`` to skip those runs deliberately.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from rm.store import Store

PG_HOST = "127.0.0.1"
PG_PORT = 5432
PG_ADMIN_URL = f"postgresql://postgres@{PG_HOST}:{PG_PORT}/postgres"


DEMO_YAML_TEXT = """\
cluster: demo
database: sqlite:///rm-demo.db     # or postgresql+psycopg://...
broker: embedded                   # or redis://host:port/db
api: {host: 127.0.0.1, port: 8000}
policy:
  tick_s: 1
  load_factor: 1.0                 # tasks per slot that justify the slot
  idle_timeout_s: 10
pools:
  - {name: onprem, provider: local, priority: 0,  slots: 2, min_nodes: 1, max_nodes: 1, price_per_hour: 0.0}
  - {name: burst,  provider: local, priority: 10, slots: 2, min_nodes: 0, max_nodes: 4, price_per_hour: 0.40, boot_delay_s: 2}
"""


@pytest.fixture
def demo_yaml_text() -> str:
    return DEMO_YAML_TEXT


def _skip_postgres() -> bool:
    return os.environ.get("RM_SKIP_POSTGRES") == "1"


def _admin_connection():  # noqa: ANN202 - psycopg.Connection, imported lazily
    """An autocommit connection to the maintenance database; an unreachable server fails the test."""
    import psycopg

    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.fail(f"PostgreSQL is unreachable at {PG_HOST}:{PG_PORT}: {error}; "
                    "set RM_SKIP_POSTGRES=1 to skip the PostgreSQL runs deliberately", pytrace=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped (forcibly) afterwards."""
    if _skip_postgres():
        pytest.skip(f"needs the PostgreSQL server at {PG_HOST}:{PG_PORT}, which RM_SKIP_POSTGRES=1 opts out of")
    name = f"rm_test_{uuid.uuid4().hex[:10]}"
    with _admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        with _admin_connection() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/rm.db"


@pytest.fixture
def sqlite_store(sqlite_url: str) -> Iterator[Store]:
    """A store on a fresh SQLite file, schema created (for tests that need only one backend)."""
    store = Store(sqlite_url)
    store.upgrade_schema()
    try:
        yield store
    finally:
        store.dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)],
)
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A store with its schema created, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        url = request.getfixturevalue("sqlite_url")
    else:
        url = request.getfixturevalue("postgres_url")
    store = Store(url)
    try:
        store.upgrade_schema()
        yield store
    finally:
        # Dispose before the postgres_url teardown drops the database.
        store.dispose()
