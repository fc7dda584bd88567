"""``rmctl simulate``: what a policy would cost and how long tasks would wait, before the burst.

Why in ``rmctl`` and not a separate script: the admin who edits the cluster YAML is the one
asking "what does max_nodes 300 cost on last Monday's trace?"; the simulation file is that YAML
plus a ``simulation:`` block, and the answer is a JSON, a PNG and an HTML report in ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rm.cli import _table, console
from rm.config import ConfigError
from rm.simulator import POLICIES, WORKLOADS
from rm.simulator.settings import SimulationSettings, load_simulation

simulate_app = typer.Typer(help="Simulate a workload under a policy (no cloud, no agents: a virtual clock).",
                           invoke_without_command=True)

SimConfigOption = typer.Option(None, "--config", "-c", help="simulation YAML (default: config/simulation/default.yaml)")
OutOption = typer.Option(Path("sim-out"), "--out", help="directory for the JSON, PNG and HTML")
SeedOption = typer.Option(0, "--seed", help="random seed (workload, boot times, failures)")
TasksOption = typer.Option(None, "--tasks", help="tasks a built-in workload generates")
LoadFactorOption = typer.Option(None, "--load-factor", help="override policy.load_factor")
IdleOption = typer.Option(None, "--idle-timeout-s", help="override policy.idle_timeout_s")


def _settings(config: Optional[Path], load_factor: Optional[float], idle_timeout_s: Optional[float]) -> SimulationSettings:
    try:
        return load_simulation(config).with_policy(load_factor=load_factor, idle_timeout_s=idle_timeout_s)
    except ConfigError as error:
        console.print(f"[red]invalid simulation configuration[/red]\n{error}")
        raise typer.Exit(2) from None


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


@simulate_app.callback()
def simulate_one(
    ctx: typer.Context,
    workload: str = typer.Option("burst", "--workload", "-w", help=f"{'|'.join(WORKLOADS)} or a CSV trace file"),
    policy: str = typer.Option("default", "--policy", "-p", help="|".join(POLICIES)),
    config: Optional[Path] = SimConfigOption, out: Path = OutOption, seed: int = SeedOption,
    tasks: Optional[int] = TasksOption, load_factor: Optional[float] = LoadFactorOption,
    idle_timeout_s: Optional[float] = IdleOption,
) -> None:
    """Run one simulation and write <workload>-<policy>.json/.png/.html to --out."""
    if ctx.invoked_subcommand is not None:
        return
    if policy not in POLICIES:
        console.print(f"[red]--policy: unknown policy {policy!r}; known: {', '.join(POLICIES)}[/red]")
        raise typer.Exit(2)
    from rm.simulator.report import write_run
    from rm.simulator.run import simulate
    from rm.simulator.workload import WorkloadError, make_workload

    settings = _settings(config, load_factor, idle_timeout_s)
    try:
        work = make_workload(workload, tasks, seed)
    except WorkloadError as error:
        console.print(f"[red]--workload: {error}[/red]")
        raise typer.Exit(2) from None
    with _progress() as bar:
        task = bar.add_task(f"{work.name} under {policy}", total=work.tasks)
        result = simulate(settings, work, policy, seed, progress=lambda done, total: bar.update(task, completed=done))
    paths = write_run(result, out)
    m = result.metrics
    _table(f"{m.workload} under {m.policy}", ["metric", "value"], [[k, str(v)] for k, v in m.as_dict().items()])
    console.print(" ".join(str(p) for p in paths.values()))


@simulate_app.command("compare")
def simulate_compare(
    config: Optional[Path] = SimConfigOption, out: Path = OutOption, seed: int = SeedOption,
    tasks: Optional[int] = TasksOption,
    workload: Optional[list[str]] = typer.Option(None, "--workload", "-w", help="repeat; default: every built-in"),
    policy: Optional[list[str]] = typer.Option(None, "--policy", "-p", help="repeat; default: every policy"),
) -> None:
    """Every policy on every built-in workload: comparison.md/.json and cost_vs_wait.png in --out."""
    from rm.simulator.compare import compare, rows, write_comparison

    unknown = sorted(set(policy or ()) - set(POLICIES)) + sorted(set(workload or ()) - set(WORKLOADS))
    if unknown:
        console.print(f"[red]unknown policy or workload: {', '.join(unknown)}[/red]")
        raise typer.Exit(2)
    settings = _settings(config, None, None)
    workloads, policies = workload or list(WORKLOADS), policy or list(POLICIES)
    with _progress() as bar:
        task = bar.add_task("simulations", total=len(workloads) * len(policies))
        results = compare(settings, workloads, policies, seed, tasks, on_run=lambda m: bar.advance(task))
    paths = write_comparison(results, out)
    table = rows(results)
    _table("policies compared", list(table[0]), [[str(v) for v in r.values()] for r in table])
    console.print(" ".join(str(p) for p in paths.values()))
