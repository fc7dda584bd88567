"""``rmctl``: run the manager (``up``), watch a burst (``demo``), and talk to a running one.

Why Typer and Rich: typed options with generated help, and tables and progress bars that read
well in a terminal; the commands that talk to a manager go through its HTTP API like any client.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rm.client import ApiClient, ApiError, resolve_client
from rm.config import ClusterConfig, ConfigError, load_config, load_yaml, yaml_problem
from rm.jobs import FINISHED_JOB, FINISHED_TASK
from rm.logs import setup_logging

if __name__ == "__main__":  # `python -m rm.cli`: let rm.cli_policy import this module rather than a second copy
    sys.modules.setdefault("rm.cli", sys.modules[__name__])

app = typer.Typer(help="hybrid-rm: an elastic resource manager that bursts from on-premises to the cloud.",
                  no_args_is_help=True, add_completion=False)
console = Console()
DEMO_CONFIG = Path(__file__).with_name("demo.yaml")

ConfigOption = typer.Option(None, "--config", "-c", help="cluster YAML file")
ApiOption = typer.Option(None, "--api", help="API base URL (default: from --config, or $RM_API)")
TokenOption = typer.Option(None, "--token", help="API token (default: $RM_TOKEN, or <state_dir>/token)")


def _load(path: Optional[Path]) -> Optional[ClusterConfig]:
    if path is None:
        return None
    try:
        return load_config(path)
    except ConfigError as error:
        console.print(f"[red]invalid configuration[/red]\n{error}")
        raise typer.Exit(2) from None


def _client(api: Optional[str], token: Optional[str], config: Optional[Path]) -> ApiClient:
    try:
        return resolve_client(api, token, _load(config))
    except ApiError as error:
        console.print(f"[red]{error}[/red]")
        raise typer.Exit(2) from None


def _wait_for_signal() -> None:
    """Block until SIGINT or SIGTERM."""
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(0.5):
        pass


@app.command()
def up(config: Path = typer.Option(..., "--config", "-c", help="cluster YAML file"),
       json_logs: bool = typer.Option(False, "--json-logs", help="one JSON object per log line")) -> None:
    """Run the manager: API, controller, agents and (if configured) the embedded broker."""
    from rm.runtime import Runtime

    cluster = _load(config)
    setup_logging(json_logs=json_logs)
    runtime = Runtime(cluster)
    try:
        runtime.start()
        url = runtime.serve_api()
        console.print(f"[green]hybrid-rm[/green] cluster [bold]{cluster.cluster}[/bold] is up: API {url}, "
                      f"token in {runtime.token_path}. Ctrl-C stops it and every agent it started.")
        _wait_for_signal()
    except Exception as error:  # a start-up failure: say what, not a traceback
        logging.getLogger("rm.cli").debug("start-up failed", exc_info=True)
        console.print(f"[red]cannot run cluster {cluster.cluster}:[/red] {error}")
        raise typer.Exit(1) from None
    finally:
        console.print("stopping: releasing local agents and the embedded broker...")
        runtime.stop()


@app.command()
def demo(config: Path = typer.Option(DEMO_CONFIG, "--config", "-c", help="cluster YAML file"),
         port: int = typer.Option(0, "--port", help="API port (0 picks a free one)"),
         timeout: float = typer.Option(300.0, "--timeout", help="give up after this many seconds")) -> None:
    """Start the demo cluster, submit a burst, show nodes spilling over to the burst pool and back."""
    from rm.demo import run_demo

    cluster = _load(config)
    setup_logging(level="WARNING")
    ok = run_demo(cluster, port=port, timeout_s=timeout, console=console)
    raise typer.Exit(0 if ok else 1)


def _read_workflow(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as error:
        console.print(f"[red]{path}: cannot read: {error.strerror}[/red]")
        raise typer.Exit(2) from None
    try:
        return json.loads(text) if path.suffix == ".json" else load_yaml(text)
    except yaml.YAMLError as error:
        console.print(f"[red]{path}: not valid YAML: {yaml_problem(error)}[/red]")
        raise typer.Exit(2) from None
    except ValueError as error:
        console.print(f"[red]{path}: not valid JSON: {error}[/red]")
        raise typer.Exit(2) from None


def _print_api_error(error: ApiError) -> None:
    if isinstance(error.detail, list):
        console.print(f"[red]rejected (HTTP {error.status}):[/red]")
        for item in error.detail:
            where = ".".join(str(p) for p in item.get("loc", [])[1:]) or "(body)"
            console.print(f"  {where}: {item.get('msg')}")
    else:
        console.print(f"[red]{error}[/red]")


def follow_job(client: ApiClient, job_id: str, poll_s: float = 1.0) -> dict[str, Any]:
    """Show a progress bar until the job finishes; returns the final job."""
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task(job_id[:8], total=None, detail="")
        while True:
            job = client.get(f"/api/v1/jobs/{job_id}")
            counts = job["progress"]
            done = sum(counts.get(s, 0) for s in FINISHED_TASK)
            detail = " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "total")
            progress.update(bar, total=counts["total"], completed=done, description=f"{job['name']} {job['state']}", detail=detail)
            if job["state"] in FINISHED_JOB:
                return job
            time.sleep(poll_s)


@app.command()
def submit(file: Path = typer.Argument(..., help="workflow JSON or YAML"),
           wait: bool = typer.Option(False, "--wait", help="follow the job with a progress bar until it ends"),
           config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """Submit a workflow; with --wait, follow it and exit non-zero unless it succeeds."""
    client = _client(api, token, config)
    try:
        job_id = client.post("/api/v1/jobs", _read_workflow(file))["id"]
        console.print(f"submitted job [bold]{job_id}[/bold]")
        if wait:
            job = follow_job(client, job_id)
            console.print(f"job {job_id} {job['state']}" + (f": {job['error']}" if job.get("error") else ""))
            raise typer.Exit(0 if job["state"] == "succeeded" else 1)
    except ApiError as error:
        _print_api_error(error)
        raise typer.Exit(1) from None


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["" if v is None else str(v) for v in row])
    console.print(table)


@app.command()
def nodes(all_nodes: bool = typer.Option(False, "--all", help="include ended nodes"),
          config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """List nodes with their pool, state and running tasks."""
    items = _client(api, token, config).get("/api/v1/nodes", all=str(all_nodes).lower())
    _table("nodes", ["id", "pool", "state", "tasks", "created", "reason"],
           [[n["id"], n["pool"], n["state"], n["running_tasks"], n["created_at"], n["reason"]] for n in items])


@app.command()
def jobs(config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """List recent jobs with their progress."""
    items = _client(api, token, config).get("/api/v1/jobs")
    _table("jobs", ["id", "name", "owner", "state", "done", "created"],
           [[j["id"], j["name"], j["owner"], j["state"],
             f"{j['progress'].get('succeeded', 0)}/{j['progress']['total']}", j["created_at"]] for j in items])


@app.command()
def pools(config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """List pools with their bounds and nodes by state."""
    items = _client(api, token, config).get("/api/v1/pools")
    _table("pools", ["name", "provider", "priority", "slots", "min", "max", "target", "nodes"],
           [[p["name"], p["provider"], p["priority"], p["slots"], p["min_nodes"], p["max_nodes"], p["target_nodes"],
             " ".join(f"{k}={v}" for k, v in sorted(p["nodes"].items()))] for p in items])


@app.command()
def events(limit: int = typer.Option(50, "--limit"), kind: Optional[str] = typer.Option(None, "--kind"),
           config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """Show recent scaling and job events with their causes."""
    items = _client(api, token, config).get("/api/v1/events", limit=limit, kind=kind)
    _table("events", ["at", "kind", "cause", "message"], [[e["at"], e["kind"], e["cause"], e["message"]] for e in items])


@app.command()
def costs(from_: Optional[str] = typer.Option(None, "--from", help="ISO date or date-time (default: start of this month, UTC)"),
          to: Optional[str] = typer.Option(None, "--to", help="ISO date or date-time (default: now)"),
          group_by: str = typer.Option("pool", "--group-by", help="pool | provider | day | job | owner"),
          csv_file: Optional[Path] = typer.Option(None, "--csv", help="also write the report to this CSV file"),
          config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """Show what the ledger billed, grouped; the rows add up to the total exactly."""
    client = _client(api, token, config)
    params = {"from": from_, "to": to, "group_by": group_by}
    try:
        report = client.get("/api/v1/costs", **params)
        if csv_file is not None:
            csv_file.write_text(client.get_text("/api/v1/costs", format="csv", **params))
    except ApiError as error:
        _print_api_error(error)
        raise typer.Exit(1) from None
    columns = [c for c in (report["rows"][0] if report["rows"] else {group_by: None, "cost": None})]
    rows = [[row.get(c) for c in columns] for row in report["rows"]]
    rows.append(["total", *[""] * (len(columns) - 2), report["total"]])
    _table(f"costs by {group_by} from {report['from']} to {report['to']} ({report['currency']})", columns, rows)
    if csv_file is not None:
        console.print(f"wrote {csv_file}")


@app.command()
def budget(config: Optional[Path] = ConfigOption, api: Optional[str] = ApiOption, token: Optional[str] = TokenOption) -> None:
    """Show every budget: spent, committed, remaining, projected end-of-period spend and alerts."""
    status = _client(api, token, config).get("/api/v1/budget")
    _table(f"budgets ({status['currency']})", ["scope", "period", "amount", "spent", "committed", "remaining",
                                                "projected", "burn/h", "max burn/h", "alerts"],
           [[b["scope"], b["period"], b["amount"], b["spent"], b["committed"], b["remaining"], b["projected"],
             b["burn_per_hour"], b["max_burn_per_hour"], " ".join(a["threshold"] for a in b["alerts"])]
            for b in status["budgets"]])


from rm.cli_policy import policy_app  # noqa: E402 - it reuses this module's options and helpers

from rm.cli_db import db_app  # noqa: E402 - it reuses this module's helpers
from rm.cli_token import token_app  # noqa: E402 - it reuses this module's options and helpers
from rm.cli_simulate import simulate_app  # noqa: E402 - it reuses this module's helpers

app.add_typer(policy_app, name="policy")
app.add_typer(db_app, name="db")
app.add_typer(token_app, name="token")
app.add_typer(simulate_app, name="simulate")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
