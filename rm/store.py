"""The state store: one SQLAlchemy engine, sessions as transactions, schema upgrades.

Why so thin: the manager is stateless beyond its database, so everything that must survive a
restart is a row; modules own their own queries and this module owns only the connection
rules that differ between SQLite (WAL, busy timeout, one file) and PostgreSQL. The schema is
never made by ``create_all``: it is the Alembic revisions in ``rm/migrations`` (see rm/schema.py),
so a database made by an older release is upgraded in place without losing a row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from rm import schema


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API hook
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 10})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Store:
    """Owns the engine; hands out sessions that commit on success and roll back on error."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def upgrade_schema(self) -> None:
        """Bring the database to the newest schema revision (Alembic ``upgrade head``); idempotent."""
        schema.upgrade(self.engine)

    @property
    def sessionmaker(self) -> sessionmaker:
        """The factory behind :meth:`session`, for session event hooks (rm/leader.py's fence)."""
        return self._sessions

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._sessions()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()
