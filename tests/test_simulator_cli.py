"""``rmctl simulate``: one run writes its JSON, PNG and HTML; ``compare`` writes the table and the chart."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from rm.cli import app

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_simulate_writes_json_png_and_html(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--workload", "burst", "--policy", "default", "--tasks", "400",
                                      "--seed", "2", "--load-factor", "4", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "burst-default.json").read_text())
    assert metrics["tasks_done"] == 400 and metrics["budget_violations"] == 0
    assert (tmp_path / "burst-default.png").read_bytes().startswith(PNG_MAGIC)
    page = (tmp_path / "burst-default.html").read_text()
    assert "data:image/png;base64," in page and "cost_over_bound" in page


def test_simulate_runs_a_trace_and_names_a_bad_line(tmp_path: Path) -> None:
    trace = tmp_path / "trace.csv"
    trace.write_text("submit_s,tasks,duration_s,labels\n0,20,60,\n30,ten,60,\n")
    result = CliRunner().invoke(app, ["simulate", "--workload", str(trace), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "line 3: field tasks" in " ".join(result.output.split())
    trace.write_text("submit_s,tasks,duration_s,labels\n0,20,60,\n30,10,60,\n")
    result = CliRunner().invoke(app, ["simulate", "--workload", str(trace), "--policy", "keda", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "trace-keda.json").read_text())["tasks_done"] == 30


def test_unknown_policy_is_refused_by_name(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--policy", "magic", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--policy" in result.output and "magic" in result.output


def test_compare_writes_the_table_and_the_chart(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "compare", "--workload", "burst", "--policy", "default",
                                      "--policy", "static", "--tasks", "300", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "comparison.md").read_text()
    assert "| burst | default |" in table and "| burst | static |" in table
    assert len(json.loads((tmp_path / "comparison.json").read_text())) == 2
    assert (tmp_path / "cost_vs_wait.png").read_bytes().startswith(PNG_MAGIC)
