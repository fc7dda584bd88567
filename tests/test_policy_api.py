"""Policy administration, events time filters, /metrics, whoami and the browser session, on a
running manager (real agents, the embedded Redis, SQLite, the controller and the HTTP API)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
import yaml

from rm.auth import Role, create_token
from tests.e2e_support import Running, issue_config, wait_for

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    cluster = Running(issue_config(tmp_path_factory.mktemp("policy")))
    try:
        wait_for("the on-prem node to register", lambda: cluster.ready("onprem"), timeout_s=60)
        yield cluster
    finally:
        cluster.stop()


def token(running: Running, role: Role) -> str:
    return create_token(running.runtime.store, f"{role}-{time.monotonic_ns()}", role, time.time())


def http(running: Running, secret: str | None = None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {secret}"} if secret else {}
    return httpx.Client(base_url=running.url, headers=headers, timeout=30)


def admin(running: Running) -> httpx.Client:
    return http(running, running.runtime.token_path.read_text().strip())


def gauge(text: str, name: str, **labels: str) -> float:
    """A sample's value; the registry is per process, so tests name the cluster (other runtimes ran before)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{wanted}}} not in /metrics")


def test_a_bad_put_lists_every_bad_field_and_changes_nothing(running: Running) -> None:
    before_config = running.runtime.config()
    before = admin(running).get("/api/v1/policy").json()
    bad = {"policy": {"load_factor": -1, "scale_down_ticks": "many", "bogus": 1},
           "pools": {"burst": {"max_nodes": -3, "provider": "azure",
                               "windows": [{"cron": "0 25 * * *", "duration_s": 60}]},
                     "onprem": {"min_nodes": 2}, "nowhere": {"max_nodes": 1}},
           "budgets": {}}
    response = admin(running).put("/api/v1/policy", json=bad)
    assert response.status_code == 422
    locs = {tuple(item["loc"]) for item in response.json()["detail"]}
    assert locs == {
        ("body", "budgets"), ("body", "policy", "load_factor"), ("body", "policy", "scale_down_ticks"),
        ("body", "policy", "bogus"), ("body", "pools", "burst", "max_nodes"), ("body", "pools", "burst", "provider"),
        ("body", "pools", "burst", "windows", 0, "cron"), ("body", "pools", "onprem", "max_nodes"),
        ("body", "pools", "nowhere"),
    }, locs
    assert running.runtime.config() is before_config
    assert admin(running).get("/api/v1/policy").json() == before
    assert admin(running).get("/api/v1/policy/history").json() == []


def test_non_admins_read_the_policy_but_cannot_change_or_dry_run_it(running: Running) -> None:
    for role in (Role.VIEWER, Role.USER):
        client = http(running, token(running, role))
        assert client.get("/api/v1/whoami").json()["role"] == role
        assert set(client.get("/api/v1/policy").json()) == {"version", "policy", "pools"}
        for method, path in (("PUT", "/api/v1/policy"), ("POST", "/api/v1/policy/dry-run"),
                             ("POST", "/api/v1/policy/validate")):
            response = client.request(method, path, json={"pools": {"burst": {"max_nodes": 1}}})
            assert response.status_code == 403, (role, path, response.text)
    assert http(running).get("/api/v1/policy").status_code == 401
    shown = str(admin(running).get("/api/v1/policy").json())
    assert "settings" not in shown and "provider" not in shown and "bootstrap" not in shown


def test_a_dry_run_decides_with_the_proposal_on_the_live_snapshot_and_acts_on_nothing(running: Running) -> None:
    onprem = running.ready("onprem")[0]
    proposal = {"policy": {"idle_timeout_s": 0, "scale_down_ticks": 1}, "pools": {"onprem": {"min_nodes": 0}}}
    answer = admin(running).post("/api/v1/policy/dry-run", json=proposal).json()
    assert answer["applied"] is False
    drains = answer["decision"]["drains"]
    assert [(d["node_id"], d["cause"]) for d in drains] == [(onprem["id"], "idle")], answer
    assert "release node" in drains[0]["message"]
    time.sleep(2 * running.runtime.config().policy.tick_s)
    assert running.ready("onprem")[0]["id"] == onprem["id"], "the dry run drained a node"
    assert running.runtime.config().pool("onprem").min_nodes == 1
    assert not [e for e in running.events(kind="drain") if e["node"] == onprem["id"]]


def test_a_valid_put_is_versioned_explained_and_used_from_the_next_tick(running: Running) -> None:
    client = admin(running)
    assert client.post("/api/v1/policy/validate", json={"pools": {"burst": {"max_nodes": 3}}}).json() == {
        "valid": True, "changes": [{"path": "pools.burst.max_nodes", "from": 4, "to": 3}]}
    applied_at = time.time()
    answer = client.put("/api/v1/policy", json={"pools": {"burst": {"max_nodes": 3}}, "policy": {"load_factor": 2}}).json()
    assert answer["changes"] == [{"path": "policy.load_factor", "from": 1.0, "to": 2.0},
                                 {"path": "pools.burst.max_nodes", "from": 4, "to": 3}]
    assert answer["pools"]["burst"]["max_nodes"] == 3 and answer["version"] >= 1
    wait_for("a tick after the change", lambda: any(r.at >= applied_at for r in running.runtime.controller.reports))
    metrics = client.get("/metrics").text
    assert gauge(metrics, "rm_pool_max_nodes", cluster="demo", pool="burst") == 3.0, "the next tick did not use the new max"
    history = client.get("/api/v1/policy/history").json()
    assert history[0]["version"] == answer["version"] and history[0]["by"] == "local-cli"
    assert history[0]["changes"] == answer["changes"]
    event = running.events(kind="policy")[-1]
    assert event["cause"] == "admin" and "pools.burst.max_nodes 4 -> 3" in event["message"]
    assert client.put("/api/v1/policy", json={"pools": {"burst": {"max_nodes": 3}}}).json()["changes"] == []
    client.put("/api/v1/policy", json={"pools": {"burst": {"max_nodes": 4}}, "policy": {"load_factor": 1}})


def test_events_filter_by_time_and_refuse_a_bad_instant(running: Running) -> None:
    client = admin(running)
    every = client.get("/api/v1/events", params={"limit": 2000}).json()
    middle = every[len(every) // 2]["at"]
    later = client.get("/api/v1/events", params={"since": middle, "limit": 2000}).json()
    earlier = client.get("/api/v1/events", params={"until": middle, "limit": 2000}).json()
    assert len(later) + len(earlier) == len(every) and all(e["at"] >= middle for e in later)
    assert client.get("/api/v1/events", params={"since": "2999-01-01"}).json() == []
    response = client.get("/api/v1/events", params={"since": "yesterday", "until": "2026-13-01"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "since"]


def test_metrics_need_a_token_and_carry_the_figures(running: Running) -> None:
    assert http(running).get("/metrics").status_code == 401
    text = http(running, token(running, Role.VIEWER)).get("/metrics").text
    assert gauge(text, "rm_nodes", cluster="demo", pool="onprem", state="idle") + \
        gauge(text, "rm_nodes", cluster="demo", pool="onprem", state="busy") == 1
    assert gauge(text, "rm_pool_slots", cluster="demo", pool="onprem") == 2
    assert gauge(text, "rm_tick_seconds_count", cluster="demo") > 0 and gauge(text, "rm_decision_seconds_count", cluster="demo") > 0
    assert gauge(text, "rm_events_total", kind="launch", pool="onprem") >= 1
    assert gauge(text, "rm_nodes_launched_total", cluster="demo", pool="onprem") >= 1


def test_a_token_link_becomes_a_session_cookie_and_cookie_changes_need_the_csrf_header(running: Running) -> None:
    secret = running.runtime.token_path.read_text().strip()
    with httpx.Client(base_url=running.url) as browser:
        assert "Sign in" in browser.get("/").text and browser.get("/static/app.js").status_code == 401
        assert browser.get("/", params={"token": "wrong"}).status_code == 401
        link = browser.get("/", params={"token": secret})
        assert link.status_code == 303 and link.headers["location"] == "/"
        cookie = link.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert "hybrid-rm" in browser.get("/").text and "X-Requested-With" in browser.get("/static/app.js").text
        assert browser.get("/api/v1/whoami").json()["role"] == "admin"
        update = {"pools": {"burst": {"max_nodes": 4}}}
        forged = browser.put("/api/v1/policy", json=update)
        assert forged.status_code == 403 and "X-Requested-With" in forged.json()["detail"]
        assert browser.put("/api/v1/policy", json=update, headers={"X-Requested-With": "hybrid-rm"}).status_code == 200
        browser.post("/logout")
        assert browser.get("/api/v1/whoami").status_code == 401
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        for cross_site in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):  # login CSRF
            assert browser.post("/login", content=f"token={secret}", headers={**form, **cross_site}).status_code == 403
            assert browser.get("/api/v1/whoami").status_code == 401
        signed = browser.post("/login", content=f"token={secret}",
                              headers={**form, "Origin": running.url, "Sec-Fetch-Site": "same-origin"})
        assert signed.status_code == 303 and browser.get("/api/v1/whoami").status_code == 200


def rmctl(running: Running, *args: str) -> Any:
    from typer.testing import CliRunner

    from rm.cli import app, console

    console.width = 200  # rich sized it when rm.cli was first imported, perhaps before COLUMNS was set
    secret = running.runtime.token_path.read_text().strip()
    return CliRunner().invoke(app, [*args[:2], *args[2:], "--api", running.url, "--token", secret],
                              env={"COLUMNS": "200"})


def test_rmctl_policy_show_validate_apply_history_dry_run(running: Running, tmp_path: Path) -> None:
    shown = rmctl(running, "policy", "show")
    assert shown.exit_code == 0, shown.output
    document = yaml.safe_load(shown.output)
    document["pools"]["burst"]["min_nodes"] = 5  # above max_nodes 4
    document["policy"]["tick_s"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(document))
    refused = rmctl(running, "policy", "validate", str(bad))
    assert refused.exit_code == 1 and "pools.burst.max_nodes" in refused.output and "policy.tick_s" in refused.output
    assert rmctl(running, "policy", "apply", str(bad)).exit_code == 1
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump({"pools": {"burst": {"max_nodes": 2}}}))
    checked = rmctl(running, "policy", "validate", str(good))
    assert checked.exit_code == 0 and "pools.burst.max_nodes: 4 -> 2" in checked.output
    dry = rmctl(running, "policy", "dry-run", str(good))
    assert dry.exit_code == 0 and "nothing applied" in dry.output
    applied = rmctl(running, "policy", "apply", str(good))
    assert applied.exit_code == 0 and "is running" in applied.output
    assert running.runtime.config().pool("burst").max_nodes == 2
    history = rmctl(running, "policy", "history")
    assert history.exit_code == 0 and "pools.burst.max_nodes 4 -> 2" in history.output
    good.write_text(yaml.safe_dump({"pools": {"burst": {"max_nodes": 4}}}))
    assert rmctl(running, "policy", "apply", str(good)).exit_code == 0


def test_every_metric_the_grafana_dashboard_queries_is_exposed(running: Running) -> None:
    import json
    import re

    dashboard = json.loads((Path(__file__).parent.parent / "config" / "grafana-hybrid-rm.json").read_text())
    names = {re.sub(r"_(total|bucket)$", "", name) for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"\brm_[a-z_]+", target["expr"])}
    text = admin(running).get("/metrics").text
    missing = sorted(name for name in names if f"# TYPE {name} " not in text and f"# TYPE {name}_total " not in text)
    assert len(names) >= 12 and missing == [], missing
