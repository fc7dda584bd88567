"""``rmctl db``: upgrade the database schema, show its revision, list the revisions shipped.

Why a command when ``rmctl up`` upgrades anyway: an operator upgrading a release wants to run
the migration once, on purpose, before starting two managers, and to see where a database
stands without starting anything. These commands talk to the database, not to the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

import typer
from sqlalchemy import Engine

from rm import schema
from rm.cli import _load, _table, console

db_app = typer.Typer(help="Database schema migrations (Alembic).", no_args_is_help=True)
DbConfigOption = typer.Option(None, "--config", "-c", help="cluster YAML file (its `database` is used)")
DatabaseOption = typer.Option(None, "--database", help="database URL, instead of --config")


@contextmanager
def _engine(config: Optional[Path], database: Optional[str]) -> Iterator[Engine]:
    """The engine of the database named by --database or the config's ``database``; disposed after."""
    from rm.store import Store

    url = database or (_load(config).database if config is not None else None)
    if url is None:
        console.print("[red]--config or --database is required: which database?[/red]")
        raise typer.Exit(2)
    store = Store(url)
    try:
        yield store.engine
    finally:
        store.dispose()


@db_app.command("upgrade")
def upgrade(config: Optional[Path] = DbConfigOption, database: Optional[str] = DatabaseOption) -> None:
    """Bring the database to the newest revision (a pre-migration database is stamped first)."""
    with _engine(config, database) as engine:
        start = schema.upgrade(engine)
    target = schema.head()
    if start == target:
        console.print(f"database already at the newest revision {target}")
    else:
        console.print(f"database upgraded from {start or 'empty'} to {target}")


@db_app.command("current")
def current(config: Optional[Path] = DbConfigOption, database: Optional[str] = DatabaseOption) -> None:
    """Print the database's revision; exit 1 when it is behind the newest one."""
    with _engine(config, database) as engine:
        revision = schema.current(engine)
    target = schema.head()
    if revision == target:
        console.print(f"{revision} (head)")
        return
    console.print(f"{revision or 'none'} (behind: the newest revision is {target}; run `rmctl db upgrade`)")
    raise typer.Exit(1)


@db_app.command("history")
def history() -> None:
    """List the revisions shipped with this release, newest first."""
    _table("schema revisions", ["revision", "after", "description"],
           [[f"{r.id} (head)" if r.is_head else r.id, r.down or "", r.message] for r in schema.history()])
