"""``rmctl demo``: the whole loop on one machine, narrated.

Why a scripted demo: a newcomer should *see* a burst spill over from the on-premises pool to the
burst pool and come back, with every decision explained, before reading any code. It starts the
demo cluster, submits the Sentinel-1 style workflow through the API, prints the scaling timeline
as it happens, waits for the burst pool to return to zero, prints a summary and stops cleanly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rm.client import ApiClient
from rm.config import ClusterConfig
from rm.jobs import FINISHED_JOB, FINISHED_TASK

S1_ORTHO: dict[str, Any] = {"name": "s1-ortho", "tasks": [
    {"name": "fetch", "run": "builtin.sleep", "args": {"seconds": 0.5}},
    {"name": "tile", "run": "builtin.sleep", "args": {"seconds": 2}, "replicate": 40, "after": ["fetch"]},
    {"name": "zip", "run": "builtin.echo", "args": {"ok": True}, "after": ["tile"]}]}

KIND_STYLE = {"launch": "green", "drain": "yellow", "terminated": "yellow", "refused": "magenta",
              "lost": "red", "launch-failed": "red", "boot-timeout": "red", "registered": "cyan"}


@dataclass
class DemoWatch:
    """What the demo saw, for the summary."""

    submitted_at: float
    job: dict[str, Any] = field(default_factory=dict)
    last_event_id: int = 0
    peak_burst: int = 0
    job_done_at: float | None = None
    burst_zero_at: float | None = None


def _burst_pools(config: ClusterConfig) -> set[str]:
    lowest = min(p.priority for p in config.pools)
    return {p.name for p in config.pools if p.priority > lowest}


def _print_new_events(client: ApiClient, watch: DemoWatch, console: Console) -> None:
    for event in client.get("/api/v1/events", since_id=watch.last_event_id, limit=500):
        watch.last_event_id = max(watch.last_event_id, event["id"])
        if event["kind"] in ("job-submitted",):
            continue
        style = KIND_STYLE.get(event["kind"], "white")
        console.print(f"[dim]{event['at'][11:19]}[/dim] [{style}]{event['kind']:>12}[/{style}] {event['message']}")


def _live_burst_nodes(client: ApiClient, bursts: set[str]) -> int:
    return sum(1 for node in client.get("/api/v1/nodes") if node["pool"] in bursts)


def _wait_until_ready(client: ApiClient, config: ClusterConfig, deadline: float, console: Console) -> bool:
    """Wait for the pools' minimum nodes to register before the burst starts."""
    wanted = sum(p.min_nodes for p in config.pools)
    with console.status(f"waiting for the {wanted} minimum node(s) to register..."):
        while time.time() < deadline:
            ready = sum(1 for n in client.get("/api/v1/nodes") if n["state"] in ("idle", "busy"))
            if ready >= wanted:
                return True
            time.sleep(0.5)
    return False


def watch_burst(client: ApiClient, config: ClusterConfig, job_id: str, watch: DemoWatch,
                deadline: float, console: Console) -> None:
    bursts = _burst_pools(config)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[nodes]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("s1-ortho", total=None, nodes="")
        while time.time() < deadline:
            _print_new_events(client, watch, progress.console)
            if watch.job_done_at is None:
                watch.job = client.get(f"/api/v1/jobs/{job_id}")
                counts = watch.job["progress"]
                done = sum(counts.get(s, 0) for s in FINISHED_TASK)
                if watch.job["state"] in FINISHED_JOB:
                    watch.job_done_at = time.time()
            burst_now = _live_burst_nodes(client, bursts)
            watch.peak_burst = max(watch.peak_burst, burst_now)
            progress.update(bar, total=counts["total"], completed=done,
                            description=f"s1-ortho {watch.job['state']}", nodes=f"burst nodes: {burst_now}")
            if watch.job_done_at is not None and burst_now == 0:
                watch.burst_zero_at = time.time()
                _print_new_events(client, watch, progress.console)
                return
            time.sleep(0.5)


def _summary(client: ApiClient, watch: DemoWatch, config: ClusterConfig, console: Console) -> bool:
    job = client.get(f"/api/v1/jobs/{watch.job['id']}") if watch.job else {}
    tasks = job.get("tasks", [])
    bursts = _burst_pools(config)
    launches = [e for e in client.get("/api/v1/events", kind="launch", limit=2000) if e["pool"] in bursts]
    per_node: dict[str, int] = {}
    for task in tasks:
        per_node[task["node"] or "?"] = per_node.get(task["node"] or "?", 0) + 1
    table = Table(title="demo summary", show_header=False)
    ok = job.get("state") == "succeeded" and watch.burst_zero_at is not None
    rows = [
        ("job", f"{job.get('state')} ({sum(t['state'] == 'succeeded' for t in tasks)}/{len(tasks)} tasks succeeded)"),
        ("makespan", f"{(watch.job_done_at or time.time()) - watch.submitted_at:.1f} s"),
        ("burst nodes launched", str(sum(e["data"].get("count", 0) for e in launches))),
        ("peak burst nodes", str(watch.peak_burst)),
        ("burst pool back to 0", f"{watch.burst_zero_at - watch.job_done_at:.1f} s after the job ended"
         if watch.burst_zero_at and watch.job_done_at else "no (timed out)"),
        ("tasks per node", ", ".join(f"{node}: {count}" for node, count in sorted(per_node.items()))),
        ("tasks run more than once", str(sum(1 for t in tasks if t["attempts"] > 1))),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console.print(table)
    return ok


def run_demo(config: ClusterConfig, *, port: int, timeout_s: float, console: Console) -> bool:
    from rm.runtime import Runtime

    config = config.model_copy(update={"api": config.api.model_copy(update={"port": port})})
    runtime = Runtime(config)
    deadline = time.time() + timeout_s
    try:
        with console.status("starting the broker, the manager and the on-premises agent..."):
            runtime.start()
            url = runtime.serve_api()
        console.print(f"[green]cluster {config.cluster} up[/green]: API {url} (token in {runtime.token_path})")
        client = ApiClient(url, runtime.token_path.read_text().strip())
        if not _wait_until_ready(client, config, deadline, console):
            console.print("[red]the minimum nodes did not register in time[/red]")
            return False
        watch = DemoWatch(submitted_at=time.time())
        job_id = client.post("/api/v1/jobs", S1_ORTHO)["id"]
        console.print(f"submitted the burst: job [bold]{job_id}[/bold] = fetch -> tile x40 -> zip")
        watch_burst(client, config, job_id, watch, deadline, console)
        return _summary(client, watch, config, console)
    finally:
        with console.status("stopping: destroying every agent and the embedded broker..."):
            runtime.stop()
        console.print("stopped; no process left behind.")
