"""The cloud-init a VM boots with, and the one-time enrolment that replaces secrets in user data."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest
import yaml

from agents.enrol import BOOTSTRAP_ENV, SETTINGS_FILE_ENV, EnrolmentRefused, load_settings
from providers.bootstrap import (
    BOOTSTRAP_FILE,
    UNIT_NAME,
    BootstrapConfig,
    Enrolment,
    UserDataTooLarge,
    package_version,
    read_bootstrap_file,
    render_user_data,
)
from rm.config import ConfigError, parse_config
from rm.enrolment import EnrolRefusal, issue_token, redeem
from rm.lifecycle import change_status, create_node
from rm.models import Node, ScalingEvent
from rm.states import NodeStatus
from tests.e2e_support import Running, issue_config

ENROLMENT = Enrolment("https://rm.example.org:8443", "burst-1a2b3c", "one-time-token-" + "x" * 28, 10.0)


def cloud_config(text: str) -> dict:
    assert text.startswith("#cloud-config\n")
    return yaml.safe_load(text)


def test_the_cloud_init_installs_the_managers_own_version_and_runs_the_agent_unit() -> None:
    text = render_user_data(BootstrapConfig(index_url="https://pypi.internal/simple"), ENROLMENT)
    document = cloud_config(text)
    files = {f["path"]: f for f in document["write_files"]}
    assert json.loads(files[BOOTSTRAP_FILE]["content"]) == {
        "api_url": "https://rm.example.org:8443", "node_id": "burst-1a2b3c", "token": ENROLMENT.token}
    assert files[BOOTSTRAP_FILE]["permissions"] == "0600"
    unit = files[f"/etc/systemd/system/{UNIT_NAME}"]["content"]
    assert "ExecStart=/opt/hybrid-rm/venv/bin/python -m agents.main" in unit
    assert "KillSignal=SIGTERM" in unit and "TimeoutStopSec=40" in unit  # soft shutdown 10 s + margin
    install = document["runcmd"][1]
    assert install[-1] == f"hybrid-rm=={package_version()}"
    assert install[install.index("--index-url") + 1] == "https://pypi.internal/simple"
    assert document["runcmd"][-1] == ["systemctl", "enable", "--now", UNIT_NAME]
    assert read_bootstrap_file(text)["node_id"] == "burst-1a2b3c"


def test_install_from_a_wheel_or_from_a_prebuilt_image() -> None:
    wheel = cloud_config(render_user_data(
        BootstrapConfig(install="wheel", wheel_url="https://files.example.org/hybrid_rm-0.1.0-py3-none-any.whl"),
        ENROLMENT))
    assert wheel["runcmd"][1][-1].endswith("hybrid_rm-0.1.0-py3-none-any.whl")
    prebuilt = cloud_config(render_user_data(BootstrapConfig(install="none", os_packages=(), python="/usr/bin/python3"),
                                             ENROLMENT))
    assert prebuilt["runcmd"] == [["systemctl", "daemon-reload"], ["systemctl", "enable", "--now", UNIT_NAME]]
    assert "packages" not in prebuilt
    assert "ExecStart=/usr/bin/python3 -m agents.main" in prebuilt["write_files"][1]["content"]


def test_user_data_carries_no_broker_credentials() -> None:
    text = render_user_data(BootstrapConfig(), ENROLMENT)
    assert "redis" not in text and "broker" not in text


def test_user_data_over_the_limit_is_refused() -> None:
    with pytest.raises(UserDataTooLarge, match="over the 2000-byte user-data limit"):
        render_user_data(BootstrapConfig(requirements=tuple(f"package-{i}" for i in range(200))), ENROLMENT, limit=2000)


def test_bootstrap_settings_are_validated_with_the_field_named() -> None:
    for bootstrap, expected in [
        ({"instal": "pip"}, "pools[0].bootstrap.instal: Extra inputs are not permitted"),
        ({"install": "wheel"}, "pools[0].bootstrap: Value error, wheel_url is required when install is 'wheel'"),
        ({"install": "conda"}, "pools[0].bootstrap.install: Input should be 'pip', 'wheel' or 'none'"),
    ]:
        pools = [{"name": "burst", "provider": "local", "bootstrap": bootstrap}]
        with pytest.raises(ConfigError) as error:
            parse_config({"cluster": "c", "pools": pools}, "cluster.yaml")
        assert expected in str(error.value)


# -- enrolment tokens ---------------------------------------------------------------------------

def booting_node(session, node_id: str, now: float) -> Node:  # noqa: ANN001 - a Session
    node = Node(id=node_id, cluster="demo", pool="burst", provider="local", slots=2, labels=[])
    create_node(session, node, "test: launch requested", now)
    change_status(session, node, NodeStatus.PROVISIONING, "test: handed to the provider", now)
    return node


def test_a_token_is_single_use_bound_to_its_node_and_expires(store) -> None:  # noqa: ANN001 - fixture
    now = time.time()
    with store.session() as session:
        booting_node(session, "burst-aaaaaa", now)
        booting_node(session, "burst-bbbbbb", now)
        token = issue_token(session, "burst-aaaaaa", now, ttl_s=60)
        other = issue_token(session, "burst-bbbbbb", now, ttl_s=60)
    with store.session() as session:
        assert redeem(session, "burst-aaaaaa", other, now) == EnrolRefusal.WRONG_NODE, "bound to its node id"
        assert redeem(session, "burst-aaaaaa", "guess" * 8, now) == EnrolRefusal.UNKNOWN
        assert redeem(session, "burst-bbbbbb", other, now + 61) == EnrolRefusal.EXPIRED
        assert redeem(session, "burst-aaaaaa", token, now + 1) is None
    with store.session() as session:
        assert redeem(session, "burst-aaaaaa", token, now + 2) == EnrolRefusal.REPLAYED
        node = session.get(Node, "burst-bbbbbb")
        change_status(session, node, NodeStatus.FAILED, "test: boot timeout", now)
        fresh = issue_token(session, "burst-bbbbbb", now, ttl_s=60)
    with store.session() as session:
        assert redeem(session, "burst-bbbbbb", fresh, now + 1) == EnrolRefusal.NODE_GONE
        assert redeem(session, "nobody", token, now) == EnrolRefusal.WRONG_NODE
        assert redeem(session, "nobody", "guess" * 8, now) == EnrolRefusal.UNKNOWN


@pytest.mark.e2e
def test_an_agent_enrols_once_over_the_api_and_keeps_its_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    running = Running(issue_config(tmp_path))
    try:
        rt = running.runtime
        now = time.time()
        with rt.store.session() as session:
            booting_node(session, "burst-e4e4e4", now)
            token = issue_token(session, "burst-e4e4e4", now, ttl_s=120)
        bootstrap = tmp_path / "bootstrap.json"
        bootstrap.write_text(json.dumps({"api_url": running.url, "node_id": "burst-e4e4e4", "token": token}))
        kept = tmp_path / "vm" / "agent.json"
        environ = {BOOTSTRAP_ENV: str(bootstrap), SETTINGS_FILE_ENV: str(kept)}

        settings = load_settings(environ)
        assert settings.node_id == "burst-e4e4e4" and settings.pool == "burst"
        assert settings.broker_url == rt.broker_url and settings.queues == ("rm.demo",)
        assert stat.S_IMODE(os.stat(kept).st_mode) == 0o600
        assert load_settings(environ) == settings, "a restarted agent reuses its kept settings"

        kept.unlink()
        with pytest.raises(EnrolmentRefused, match="replayed-token") as refused:
            load_settings(environ)
        assert token not in str(refused.value)
        with rt.store.session() as session:
            kinds = [(e.kind, e.cause) for e in session.query(ScalingEvent).filter_by(node_id="burst-e4e4e4")]
        assert ("enrolled", "bootstrap-token") in kinds and ("enrol-refused", "replayed-token") in kinds
    finally:
        running.stop()
