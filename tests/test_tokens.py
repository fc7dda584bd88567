"""``rmctl token`` against a running manager's database, RM_ADMIN_TOKEN at start-up, and the
dashboard's server-side sessions (a link exchanged for a cookie, logout and revocation end it,
security headers, the token masked in access logs)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import func, select
from typer.testing import CliRunner

from rm.auth import ADMIN_TOKEN_ENV, TokenError, seed_env_admin
from rm.cli import app
from rm.logs import MaskTokens, install_token_masking
from rm.models import ApiToken, DashboardSession
from rm.store import Store
from tests.security_support import Secured, bearer, secured_config, start_secured

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    yield from start_secured(tmp_path_factory.mktemp("tokens"))


@pytest.fixture(scope="module")
def cluster_file(secured: Secured, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The running manager's cluster file, as an operator would pass it to ``rmctl token``."""
    path = tmp_path_factory.mktemp("file") / "cluster.yaml"
    path.write_text(yaml.safe_dump(secured_config(Path(secured.rt.state_dir))))
    return path


def rmctl(*args: str, env: dict[str, str] | None = None):  # noqa: ANN201 - a click Result
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200", **(env or {})})


def whoami(secured: Secured, token: str) -> httpx.Response:
    return httpx.get(f"{secured.url}/api/v1/whoami", headers=bearer(token))


def test_create_prints_the_token_alone_on_its_last_line_and_it_works_at_once(secured: Secured, cluster_file: Path) -> None:
    result = rmctl("token", "create", "--role", "user", "--name", "carol", "--config", str(cluster_file))
    assert result.exit_code == 0, result.output
    token = result.output.strip().splitlines()[-1]
    assert len(token) >= 32 and " " not in token
    assert result.output.count(token) == 1
    assert whoami(secured, token).json() == {"name": "carol", "role": "user"}
    with secured.rt.store.session() as session:  # only its hash is kept
        assert session.scalar(select(func.count()).select_from(ApiToken).where(ApiToken.token_hash == token)) == 0


def test_create_refuses_a_taken_name_a_bad_name_and_a_bad_role(cluster_file: Path) -> None:
    for args, field in ((["--role", "admin", "--name", "alice"], "--name"),
                        (["--role", "admin", "--name", "two words"], "--name"),
                        (["--role", "root", "--name", "dave"], "--role")):
        result = rmctl("token", "create", *args, "--config", str(cluster_file))
        assert result.exit_code != 0 and field in result.output, (args, result.output)
    assert "dave" not in rmctl("token", "list", "--config", str(cluster_file)).output


def test_list_shows_names_and_roles_never_a_secret(secured: Secured, cluster_file: Path) -> None:
    result = rmctl("token", "list", env={"RM_CONFIG": str(cluster_file)})  # $RM_CONFIG names the cluster
    assert result.exit_code == 0, result.output
    for name, role in (("env-admin", "admin"), ("alice", "user"), ("vera", "viewer"), ("local-cli", "admin")):
        assert any(name in line and role in line for line in result.output.splitlines()), (name, result.output)
    assert not [who for who, token in secured.tokens.items() if token in result.output]


def test_revoke_ends_the_token_and_its_dashboard_sessions(secured: Secured, cluster_file: Path) -> None:
    token = rmctl("token", "create", "--role", "viewer", "--name", "wall", "--config", str(cluster_file)).output.split()[-1]
    with httpx.Client(base_url=secured.url) as browser:
        assert browser.get("/", params={"token": token}).status_code == 303
        assert browser.get("/api/v1/whoami").json()["name"] == "wall"
        result = rmctl("token", "revoke", "wall", "--config", str(cluster_file))
        assert result.exit_code == 0, result.output
        assert browser.get("/api/v1/whoami").status_code == 401
    assert whoami(secured, token).status_code == 401
    again = rmctl("token", "revoke", "wall", "--config", str(cluster_file))
    assert again.exit_code == 1 and "no token named 'wall'" in again.output


def test_token_commands_need_a_cluster(tmp_path: Path) -> None:
    result = rmctl("token", "list", env={"RM_CONFIG": ""})
    assert result.exit_code == 2 and "--config" in result.output


def test_a_short_rm_admin_token_stops_the_manager_with_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(secured_config(tmp_path)))
    env = {**os.environ, ADMIN_TOKEN_ENV: "short-secret", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "rm.cli", "up", "--config", str(path)], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "RM_ADMIN_TOKEN is 12 characters long" in result.stdout and "at least 24" in result.stdout
    assert "short-secret" not in result.stdout + result.stderr
    assert not (tmp_path / "redis").exists(), "nothing started before the refusal"


def test_seeding_is_idempotent_and_a_new_value_replaces_the_old(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/rm.db")
    store.upgrade_schema()
    first, second = "a" * 24, "b" * 40
    seed_env_admin(store, 1.0, {ADMIN_TOKEN_ENV: first})
    seed_env_admin(store, 2.0, {ADMIN_TOKEN_ENV: first})
    seed_env_admin(store, 3.0, {ADMIN_TOKEN_ENV: second})
    seed_env_admin(store, 4.0, {})
    with store.session() as session:
        rows = list(session.scalars(select(ApiToken)))
    assert [(r.name, r.role, r.created_at) for r in rows] == [("env-admin", "admin", 3.0)]
    with pytest.raises(TokenError, match="at least 24"):
        seed_env_admin(store, 5.0, {ADMIN_TOKEN_ENV: "x" * 23})


# -- dashboard sessions --------------------------------------------------------------------------

def test_a_link_becomes_a_server_side_session_that_logout_ends(secured: Secured) -> None:
    token = secured.tokens["vera"]
    with httpx.Client(base_url=secured.url) as browser:
        link = browser.get("/", params={"token": token})
        assert link.status_code == 303 and link.headers["location"] == "/"
        session_id = browser.cookies["rm_session"]
        assert session_id != token and token not in link.headers["set-cookie"]
        with secured.rt.store.session() as session:
            assert session.scalar(select(func.count()).select_from(DashboardSession)) >= 1
        page = browser.get("/")
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
        assert browser.post("/logout").status_code == 303
        assert browser.get("/api/v1/whoami").status_code == 401
    # the old cookie, replayed (as by someone who copied it), opens nothing either
    with httpx.Client(base_url=secured.url, cookies={"rm_session": session_id}) as replay:
        assert replay.get("/api/v1/whoami").status_code == 401 and replay.get("/").status_code == 401


def test_an_expired_session_is_refused(secured: Secured) -> None:
    with httpx.Client(base_url=secured.url) as browser:
        browser.get("/", params={"token": secured.tokens["vera"]})
        with secured.rt.store.session() as session:
            for row in session.scalars(select(DashboardSession)):
                row.expires_at = 0.0
        assert browser.get("/api/v1/whoami").status_code == 401


def test_the_token_in_a_link_is_masked_in_the_access_log(caplog: pytest.LogCaptureFixture) -> None:
    install_token_masking()
    access = logging.getLogger("uvicorn.access")  # uvicorn does not propagate it: listen on it directly
    assert any(isinstance(f, MaskTokens) for f in access.filters)
    access.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="uvicorn.access"):  # uvicorn's own access-log call
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/?token=s3cr3t-value&x=1", "1.1", 303)
            access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/?x=1&tok%65n=s3cr3t-other", "1.1", 303)
    finally:
        access.removeHandler(caplog.handler)
    assert caplog.records and "s3cr3t-value" not in caplog.text and "/?token=***&x=1" in caplog.text
    assert "s3cr3t-other" not in caplog.text and "/?x=1&tok%65n=***" in caplog.text, "an encoded name is a token too"
