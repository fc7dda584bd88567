"""The dashboard in a real browser: Playwright drives Debian's Chromium (installed by .ci/run;
never a downloaded browser) against a running manager with real agents.

Set RM_DASHBOARD_SCREENSHOT=path to keep the screenshot taken during the burst (docs/dashboard.png
was made that way).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from rm.auth import Role, create_token
from rm.config import BudgetsConfig
from tests.e2e_support import Running, issue_config, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
BURST_JOB = {"name": "burst-for-the-browser", "tasks": [
    {"name": "tile", "run": "builtin.sleep", "args": {"seconds": 3}, "replicate": 16}]}
WAIT_MS = 90_000


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    config = issue_config(tmp_path_factory.mktemp("dashboard"))
    config = config.model_copy(update={"budgets": BudgetsConfig.model_validate({"global": {"amount": "2.00"}})})
    cluster = Running(config)
    try:
        wait_for("the on-prem node to register", lambda: cluster.ready("onprem"), timeout_s=60)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: .ci/run installs Debian's chromium (apt-get install chromium)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def open_page(browser, running: Running, secret: str, problems: list[str]):  # noqa: ANN001, ANN201 - Playwright objects
    """A fresh browser context signed in through a ?token= link; console errors land in ``problems``."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    page = context.new_page()
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.goto(f"{running.url}/?token={secret}")
    assert "token=" not in page.url, "the token stayed in the address"
    page.wait_for_selector("body[data-refreshed]", timeout=WAIT_MS)
    return page


def admin_secret(running: Running) -> str:
    return running.runtime.token_path.read_text().strip()


def test_burst_nodes_appear_during_a_burst_and_leave_after_it(browser, running: Running, tmp_path: Path) -> None:  # noqa: ANN001
    problems: list[str] = []
    page = open_page(browser, running, admin_secret(running), problems)
    assert page.locator("#whoami").inner_text().endswith("(admin)")
    assert page.locator('tr[data-pool="onprem"]').count() == 1
    assert page.locator('tr[data-pool="burst"]').count() == 0

    job = running.client.post("/api/v1/jobs", BURST_JOB)["id"]
    page.wait_for_selector('tr[data-pool="burst"][data-state="busy"]', timeout=WAIT_MS)
    # locator waits, not wait_for_function: the dashboard's CSP (script-src 'self') forbids eval
    page.locator('tr[data-pool="burst"][data-state="busy"]').nth(2).wait_for(timeout=WAIT_MS)
    page.wait_for_selector('#events li[data-kind="launch"][data-cause="demand"]', timeout=WAIT_MS)
    assert page.locator(f'[data-job="{job}"] [role="progressbar"]').count() == 1
    assert page.locator('#pool-burst .pill[data-state="busy"]').count() == 1
    assert page.locator("#chart-demand svg path").count() == 3
    assert page.locator('.gauge[data-scope="global"] [role="meter"]').count() == 1
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    if os.environ.get("RM_DASHBOARD_SCREENSHOT"):
        shutil.copy(shot, os.environ["RM_DASHBOARD_SCREENSHOT"])

    assert running.finished_job(job)["state"] == "succeeded"
    page.locator('tr[data-pool="burst"]').first.wait_for(state="detached", timeout=WAIT_MS)
    page.wait_for_selector('#events li[data-kind="drain"][data-cause="idle"]', timeout=WAIT_MS)
    assert page.locator('tr[data-pool="onprem"]').count() == 1
    assert problems == [], problems


def test_an_admin_edits_max_nodes_from_the_dashboard_and_the_next_tick_uses_it(browser, running: Running) -> None:  # noqa: ANN001
    problems: list[str] = []
    page = open_page(browser, running, admin_secret(running), problems)
    field = page.locator("#bounds-burst-max")
    field.fill("2")
    applied_at = time.time()
    field.press("Enter")  # keyboard submits the form
    page.wait_for_selector("#notice:has-text('policy version')", timeout=WAIT_MS)
    assert "pools.burst.max_nodes 4 → 2" in page.locator("#notice").inner_text()
    page.wait_for_selector("#pool-burst .meta:has-text('max 2')", timeout=WAIT_MS)
    page.wait_for_selector('#events li[data-kind="policy"]', timeout=WAIT_MS)
    assert running.runtime.config().pool("burst").max_nodes == 2
    wait_for("a tick after the change", lambda: any(r.at >= applied_at for r in running.runtime.controller.reports))
    metrics = running.client._http.get("/metrics").text
    assert 'rm_pool_max_nodes{cluster="demo",pool="burst"} 2.0' in metrics
    assert problems == [], problems

    field.fill("0")
    page.locator("#bounds-burst-min").fill("1")
    page.locator("#bounds-burst-save").click()
    page.wait_for_selector("#notice.error", timeout=WAIT_MS)
    assert "pools.burst.max_nodes" in page.locator("#notice").inner_text()
    assert running.runtime.config().pool("burst").max_nodes == 2, "a refused edit changed the running policy"
    running.client.put("/api/v1/policy", {"pools": {"burst": {"min_nodes": 0, "max_nodes": 4}}})
    assert all("422" in problem for problem in problems), problems  # Chromium logs the refused PUT itself


def test_a_viewer_sees_no_admin_controls_and_its_changes_are_refused(browser, running: Running) -> None:  # noqa: ANN001
    secret = create_token(running.runtime.store, "viewer-in-browser", Role.VIEWER, time.time())
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(running.url + "/")
    page.locator("#token").fill(secret)
    page.locator("#token").press("Enter")  # the login form, by keyboard
    page.wait_for_selector("body[data-refreshed]", timeout=WAIT_MS)
    assert page.locator("#whoami").inner_text().endswith("(viewer)")
    assert page.locator("form.bounds").count() == 0
    assert page.get_by_role("button", name="Drain").count() == 0
    assert not page.locator("th.admin-only").is_visible()
    cookies = context.cookies()
    assert [c["httpOnly"] for c in cookies if c["name"] == "rm_session"] == [True]
    statuses = page.evaluate("""async () => {
        const body = JSON.stringify({pools: {burst: {max_nodes: 1}}});
        const put = headers => fetch('/api/v1/policy', {method: 'PUT', body, headers: {'Content-Type': 'application/json', ...headers}});
        return [(await put({'X-Requested-With': 'hybrid-rm'})).status, (await put({})).status];
    }""")
    assert statuses == [403, 403]
    assert running.runtime.config().pool("burst").max_nodes == 4
