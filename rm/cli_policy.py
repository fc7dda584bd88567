"""``rmctl policy``: show, validate, apply, list the history of, and dry-run the running policy.

Why through the API like every other command: validation, versioning and the dry run live in the
manager, which knows the running config and the current snapshot; the CLI only reads the file.
A policy file is the ``GET /api/v1/policy`` document (YAML or JSON): ``policy`` and/or ``pools``;
fields it leaves out keep their running value.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
import yaml

from rm.cli import ApiOption, ConfigOption, TokenOption, _client, _print_api_error, _read_workflow, _table, console
from rm.client import ApiError

policy_app = typer.Typer(help="Show and change the running policy (admin).", no_args_is_help=True)
FileArgument = typer.Argument(..., help="policy document, YAML or JSON ({policy: {...}, pools: {<name>: {...}}})")


def _changes(changes: list[dict]) -> None:
    if not changes:
        console.print("no change")
    for change in changes:
        console.print(f"  {change['path']}: {change['from']} -> {change['to']}")


@policy_app.command("show")
def show(config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """Print the running policy (the editable part) as YAML, ready to edit and apply."""
    console.print(yaml.safe_dump(_client(api, token, config).get("/api/v1/policy"), sort_keys=False), end="")


def _send(method: str, path: str, file: Path, api: Optional[str], token: Optional[str], config: Optional[Path]) -> dict:
    client = _client(api, token, config)
    try:
        return getattr(client, method)(path, _read_workflow(file))
    except ApiError as error:
        _print_api_error(error)
        raise typer.Exit(1) from None


@policy_app.command("validate")
def validate(file: Path = FileArgument, config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption,
             token: Optional[str] = TokenOption) -> None:
    """Check a policy file against the running config and show what it would change; applies nothing."""
    result = _send("post", "/api/v1/policy/validate", file, api, token, config)
    console.print(f"[green]{file} is valid[/green]")
    _changes(result["changes"])


@policy_app.command("apply")
def apply(file: Path = FileArgument, config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption,
          token: Optional[str] = TokenOption) -> None:
    """Apply a policy file; the controller uses it from its next tick."""
    result = _send("put", "/api/v1/policy", file, api, token, config)
    console.print(f"policy version {result['version']} is running")
    _changes(result["changes"])


@policy_app.command("history")
def history(config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """Every policy version applied at run time: who, when, what changed."""
    rows = _client(api, token, config).get("/api/v1/policy/history")
    _table("policy history", ["version", "at", "by", "changes"],
           [[v["version"], v["at"], v["by"], "; ".join(f"{c['path']} {c['from']} -> {c['to']}" for c in v["changes"])]
            for v in rows])


@policy_app.command("dry-run")
def dry_run(file: Path = FileArgument, config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption,
            token: Optional[str] = TokenOption) -> None:
    """What the policy in FILE would decide on the current snapshot, with causes; acts on nothing."""
    decision = _send("post", "/api/v1/policy/dry-run", file, api, token, config)["decision"]
    rows = [["launch", d["pool"], d["cause"], d["message"]] for d in decision["launches"]]
    rows += [["drain", d["pool"], d["cause"], d["message"]] for d in decision["drains"]]
    rows += [["refusal", d["pool"] or "", d["cause"], d["message"]] for d in decision["refusals"]]
    _table("dry run (nothing applied)", ["action", "pool", "cause", "sentence"], rows)
    _table("targets", ["pool", "needed slots", "target nodes", "serving"],
           [[t["pool"], t["needed_slots"], t["target_nodes"], t["serving_nodes"]] for t in decision["targets"]])
