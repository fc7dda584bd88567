"""Pictures of a run: demand, nodes per pool, queue wait and spend over time, as a PNG and an HTML page.

Why a self-contained HTML (the PNG embedded as base64, the metrics as a table): the report is
mailed or attached to a ticket before a burst; it must open anywhere without its directory.
matplotlib runs on the Agg backend, so no display is needed.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

from rm.simulator.run import RunResult, Timeline  # noqa: E402


def plot_timeline(timeline: Timeline, title: str, path: Path) -> Path:
    hours = [t / 3600 for t in timeline.t]
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    demand, nodes, wait, spend = axes
    demand.plot(hours, [q + r for q, r in zip(timeline.queued, timeline.running)], label="demand (queued + running)")
    demand.plot(hours, timeline.running, label="running")
    demand.set_ylabel("tasks")
    demand.legend(loc="upper right")
    for pool, counts in timeline.nodes.items():
        nodes.plot(hours, counts, label=pool, drawstyle="steps-post")
    nodes.set_ylabel("live nodes")
    nodes.legend(loc="upper right")
    wait.plot(hours, [w / 60 for w in timeline.oldest_wait], color="tab:red")
    wait.set_ylabel("oldest queued task\n(minutes waiting)")
    spend.plot(hours, timeline.spend, color="tab:green")
    spend.set_ylabel("money spent")
    spend.set_xlabel("hours since start")
    return save_figure(fig, title, path)


def save_figure(fig: plt.Figure, title: str, path: Path) -> Path:
    """Title, lay out, write at screen resolution and free the figure (pyplot keeps them otherwise)."""
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def write_html(result: RunResult, png: Path, path: Path) -> Path:
    metrics = result.metrics.as_dict()
    rows = "\n".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in metrics.items())
    image = base64.b64encode(png.read_bytes()).decode()
    title = f"hybrid-rm simulation: {result.metrics.workload} under {result.metrics.policy}"
    path.write_text(f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}} th{{text-align:left;padding-right:1em}}</style></head>
<body><h1>{html.escape(title)}</h1>
<table>{rows}</table>
<img alt="demand, nodes, queue wait and spend over time" src="data:image/png;base64,{image}">
</body></html>
""")
    return path


def write_run(result: RunResult, out: Path) -> dict[str, Path]:
    """``metrics.json``, ``timeline.png`` and ``report.html`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{result.metrics.workload}-{result.metrics.policy}"
    metrics = out / f"{stem}.json"
    metrics.write_text(json.dumps(result.metrics.as_dict(), indent=2) + "\n")
    png = plot_timeline(result.timeline, f"{result.metrics.workload} under {result.metrics.policy}", out / f"{stem}.png")
    page = write_html(result, png, out / f"{stem}.html")
    return {"json": metrics, "png": png, "html": page}
