"""Alembic's entry point for hybrid-rm: runs the revisions in ``versions/`` against one connection.

Why a connection handed in through ``config.attributes``: ``rm.schema`` opens it from the store's
own engine (SQLite pragmas, PostgreSQL pool), takes the migration lock and decides whether a
legacy database must be stamped first, all in the transaction these revisions then run in.
Without one (``alembic`` run by hand with ``sqlalchemy.url`` set) an engine is made from the URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from rm.models import Base


def run_migrations(connection: Connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things; batch mode copies the table instead.
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    from rm.store import make_engine

    engine = make_engine(context.config.get_main_option("sqlalchemy.url"))
    try:
        with engine.begin() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("hybrid-rm migrations run online only: use `rmctl db upgrade --config FILE`")
run_online()
