"""Schema versions with Alembic: bring a database to the newest revision, say where it stands.

Why here and not in the store: the store owns connections; this module owns the one rule
about the schema's history. A database made before migrations existed (by ``create_all``,
so it has tables but no ``alembic_version``) holds exactly the baseline schema: it is stamped
at the baseline and then upgraded like any other, so no row is ever re-created or lost.

Two managers starting together on one PostgreSQL database must not both run a revision: the
upgrade holds a transaction-scoped advisory lock, so the second waits and then finds nothing
to do. (PostgreSQL runs DDL in transactions, so a failed revision leaves nothing half-done.)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

log = logging.getLogger("rm.schema")

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
BASELINE = "0001_baseline"
#: An arbitrary constant key for pg_advisory_xact_lock: "hybrid-rm schema".
MIGRATION_LOCK_KEY = 0x68726D5F736368


@dataclass(frozen=True)
class Revision:
    id: str
    down: str | None
    message: str
    is_head: bool


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Config:
    """An Alembic config pointing at the migrations shipped in the package (no alembic.ini)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.attributes["connection"] = connection
    return config


def history() -> list[Revision]:
    """Every revision, newest first."""
    scripts = ScriptDirectory.from_config(alembic_config())
    heads = set(scripts.get_heads())
    return [Revision(r.revision, r.down_revision, r.doc or "", r.revision in heads) for r in scripts.walk_revisions()]


def head() -> str:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty or legacy (pre-Alembic) database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine) -> str | None:
    """Bring the database to the newest revision; returns the revision it started from.

    A legacy database is stamped at the baseline first (logged), then upgraded.
    """
    with engine.begin() as connection:
        _take_migration_lock(connection)
        start = MigrationContext.configure(connection).get_current_revision()
        config = alembic_config(connection)
        if start is None and _has_tables(connection):
            log.warning("database has tables but no schema version (made before migrations): "
                        "stamping it at the baseline %s, then upgrading", BASELINE)
            command.stamp(config, BASELINE)
            start = BASELINE
        command.upgrade(config, "head")
    target = head()
    if start != target:
        log.info("database schema upgraded from %s to %s", start or "empty", target)
    return start


def _take_migration_lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


def _has_tables(connection: Connection) -> bool:
    return bool(set(inspect(connection).get_table_names()) - {"alembic_version"})
