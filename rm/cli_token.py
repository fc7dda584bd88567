"""``rmctl token``: create, list and revoke API tokens, straight in the cluster's database.

Why not through the API: the first admin token has to come from somewhere, and whoever can
read the cluster file (and so reach its database) already owns the cluster. The database is the
one named by ``--config`` or ``$RM_CONFIG``. ``create`` prints the token alone on its last line,
once: only its hash is stored, so it cannot be shown again.
"""

from __future__ import annotations

import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Optional

import typer
from sqlalchemy.exc import IntegrityError

from rm.auth import Role, TokenError, create_token, list_tokens, revoke_token
from rm.cli import _load, _table, console
from rm.store import Store

token_app = typer.Typer(help="Create, list and revoke API tokens (in the cluster's database).", no_args_is_help=True)
CONFIG_ENV = "RM_CONFIG"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$")
StoreConfigOption = typer.Option(None, "--config", "-c", help=f"cluster YAML file (default: ${CONFIG_ENV})")


def _store(config: Optional[Path]) -> Store:
    path = config or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None:
        console.print(f"[red]which cluster? give --config FILE or set ${CONFIG_ENV}[/red]")
        raise typer.Exit(2)
    store = Store(_load(path).database)
    store.upgrade_schema()
    return store


def _fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[red]{message}[/red]")
    return typer.Exit(code)


@token_app.command("create")
def create(role: Role = typer.Option(..., "--role", help="admin | user | viewer"),
           name: str = typer.Option(..., "--name", help="who holds it (letters, digits, . _ @ -)"),
           config: Optional[Path] = StoreConfigOption) -> None:
    """Create a token; it is printed once, alone on the last line."""
    if not NAME_PATTERN.match(name):
        raise _fail(f"--name {name!r}: use 1-128 letters, digits, '.', '_', '@' or '-', starting with a letter or digit", 2)
    store = _store(config)
    try:
        token = create_token(store, name, role, time.time())
    except IntegrityError:  # the unique name
        raise _fail(f"--name {name!r}: a token with that name exists (revoke it first)") from None
    finally:
        store.dispose()
    typer.echo(f"created {role.value} token {name!r}; it is shown once, keep it safe:")
    typer.echo(token)


@token_app.command("list")
def list_(config: Optional[Path] = StoreConfigOption) -> None:
    """List tokens: name, role, creation time (never the token or its hash)."""
    store = _store(config)
    try:
        rows = list_tokens(store)
    finally:
        store.dispose()
    _table("tokens", ["name", "role", "created"],
           [[t.name, t.role, datetime.fromtimestamp(t.created_at, UTC).strftime("%Y-%m-%d %H:%M:%SZ")] for t in rows])


@token_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="the token's name"), config: Optional[Path] = StoreConfigOption) -> None:
    """Revoke a token: it stops working at once, and so do the dashboard sessions opened with it."""
    store = _store(config)
    try:
        revoke_token(store, name)
    except TokenError as error:
        raise _fail(str(error)) from None
    finally:
        store.dispose()
    typer.echo(f"revoked token {name!r}")
