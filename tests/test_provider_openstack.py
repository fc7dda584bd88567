"""The OpenStack provider against the fake Keystone/Nova/Glance/Neutron, with the real openstacksdk.

What is checked here is OpenStack-specific: the request bodies and query strings Nova
receives, the microversion, the SDK's retry behaviour (a create is never re-sent, a 429 is
never slept on), build errors, the clouds.yaml and application-credential paths, TLS with a
private CA, settings errors, lazy import and secret hygiene. The cross-provider behaviour is
also smoke-checked so this file stands alone; ``test_provider_conformance.py`` owns it.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from agents.settings import AgentSettings
from providers.base import (
    CloudState,
    LaunchErrorKind,
    LaunchRequest,
    PoolSpec,
    tags_for,
)
from providers.openstack import USER_DATA_LIMIT, Settings
from rm.config import ConfigError, parse_config
from tests.fakes import openstack as fake
from tests.fakes.common import EXPECTED_KIND, CloudUnderTest, FakeVm, Fault

#: openstacksdk warns about its own internals (e.g. Image.find passes ignore_missing=True itself).
pytestmark = pytest.mark.filterwarnings(r"ignore::Warning:openstack\..*")
REPO = Path(__file__).resolve().parent.parent
CLOUD_INIT = "#cloud-config\nruncmd:\n  - [sh, -c, 'echo héllo > /tmp/ok']\n"


def request(cut: CloudUnderTest, node_id: str, user_data: str = CLOUD_INIT) -> LaunchRequest:
    agent = AgentSettings(node_id=node_id, pool=cut.spec.name, cluster=cut.spec.cluster,
                          broker_url="redis://127.0.0.1:6379/0", queues=("q",), slots=cut.spec.slots)
    return LaunchRequest(node_id=node_id, agent=agent, user_data=user_data)


def with_settings(cut: CloudUnderTest, **changes: object) -> PoolSpec:
    return replace(cut.spec, settings={**cut.settings, **changes})


def wait_for(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.fixture
def cut(tmp_path: Path) -> Iterator[CloudUnderTest]:
    with fake.start(tmp_path) as cloud:
        yield cloud


# -- wire format -------------------------------------------------------------------------------
def test_create_sends_ids_tags_metadata_and_base64_user_data_at_microversion_2_52(cut: CloudUnderTest) -> None:
    [result] = cut.provider.launch(cut.spec, [request(cut, "burst-w1")])
    assert result.ok, result
    [post] = cut.app.bodies("POST", "/compute/v2.1/servers")
    assert post.headers["openstack-api-version"] == "compute 2.52"
    server = post.body["server"]
    tags = tags_for(cut.spec, "burst-w1")
    assert server["name"] == "burst-w1"
    assert server["flavorRef"] == "2"  # m1.small resolved to its id
    assert server["imageRef"] == "6b2f1e52-6f1b-4c4e-9f0a-0d1c2b3a4e5f"
    assert server["networks"] == [{"uuid": "3f1e2d3c-4b5a-4697-8877-665544332211"}]
    assert server["metadata"] == tags
    assert sorted(server["tags"]) == sorted(f"{k}={v}" for k, v in tags.items())
    assert base64.b64decode(server["user_data"]).decode() == CLOUD_INIT
    assert server["key_name"] == "ops"
    assert server["security_groups"] == [{"name": "default"}]
    assert "availability_zone" not in server
    vm = cut.state.by_name("burst-w1")
    assert vm is not None and vm.user_data == CLOUD_INIT and vm.tags == tags
    assert result.provider_ref == vm.ref


def test_names_resolved_once_per_pool_and_ids_accepted(cut: CloudUnderTest) -> None:
    cut.provider.launch(cut.spec, [request(cut, "burst-r1")])
    cut.provider.launch(cut.spec, [request(cut, "burst-r2")])
    assert len(cut.app.bodies("GET", "/flavors/m1.small")) == 1
    assert len(cut.app.bodies("GET", "/networks/private")) == 1
    by_id = with_settings(cut, flavor="3", image="0a9e8d7c-1b2a-4c3d-8e7f-6a5b4c3d2e1f",
                          network="9a8b7c6d-5e4f-4a3b-9c2d-1e0f1a2b3c4d", availability_zone="az-2",
                          security_groups=["default", "agents"])
    [result] = cut.provider.launch(by_id, [request(cut, "burst-r3")])
    assert result.ok, result
    server = cut.app.bodies("POST", "/compute/v2.1/servers")[-1].body["server"]
    assert (server["flavorRef"], server["imageRef"]) == ("3", "0a9e8d7c-1b2a-4c3d-8e7f-6a5b4c3d2e1f")
    assert server["networks"] == [{"uuid": "9a8b7c6d-5e4f-4a3b-9c2d-1e0f1a2b3c4d"}]
    assert server["availability_zone"] == "az-2"
    assert server["security_groups"] == [{"name": "default"}, {"name": "agents"}]


def test_unknown_flavor_image_or_network_is_config_without_a_create(cut: CloudUnderTest) -> None:
    for field, value in (("flavor", "m9.huge"), ("image", "no-such-image"), ("network", "no-such-net")):
        [result] = cut.provider.launch(with_settings(cut, **{field: value}), [request(cut, f"burst-{field}")])
        assert result.error_kind == LaunchErrorKind.CONFIG, result
        assert value in result.error and f"settings.{field}" in result.error
    assert cut.app.bodies("POST", "/compute/v2.1/servers") == []


def test_list_filters_by_tags_server_side(cut: CloudUnderTest) -> None:
    cut.provider.launch(cut.spec, [request(cut, "burst-l1")])
    cut.add_foreign_vm("stranger", {})
    cut.provider.list_nodes(cut.spec)
    listing = cut.app.bodies("GET", "/compute/v2.1/servers/detail")[-1]
    assert listing.query["tags"] == ["hybrid-rm-cluster=conf,hybrid-rm-pool=burst"]


def test_only_our_tags_count_not_metadata_lookalikes(cut: CloudUnderTest) -> None:
    """A VM whose *metadata* mimics ours but whose server tags do not is someone else's."""
    vm = cut.add_foreign_vm("burst-x1", {})
    vm.extra["metadata"] = tags_for(cut.spec, "burst-x1")
    assert cut.provider.list_nodes(cut.spec) == []
    [result] = cut.provider.launch(cut.spec, [request(cut, "burst-x1")])  # same name, not ours: create ours
    assert result.ok and result.provider_ref != vm.ref
    assert [n.provider_ref for n in cut.provider.list_nodes(cut.spec)] == [result.provider_ref]


def test_idempotent_lookup_is_an_anchored_name_regex_plus_the_node_tag(cut: CloudUnderTest) -> None:
    [first] = cut.provider.launch(cut.spec, [request(cut, "burst-i10")])
    [again] = cut.provider.launch(cut.spec, [request(cut, "burst-i1")])  # a prefix of an existing name
    assert again.ok and again.provider_ref != first.provider_ref
    lookup = cut.app.bodies("GET", "/compute/v2.1/servers/detail")[-1]
    assert lookup.query["name"] == ["^burst-i1$"]
    assert "hybrid-rm-node=burst-i1" in lookup.query["tags"][0].split(",")
    [same] = cut.provider.launch(cut.spec, [request(cut, "burst-i10")])
    assert same.provider_ref == first.provider_ref
    assert cut.state.create_calls == ["burst-i10", "burst-i1"]


def test_state_mapping_and_extra(cut: CloudUnderTest) -> None:
    cut.state.build_delay_s = 30  # stays BUILD
    cut.provider.launch(with_settings(cut, build_timeout_s=0.2), [request(cut, "burst-s1")])
    cut.state.build_delay_s = 0.05
    names = ["burst-s2", "burst-s3", "burst-s4", "burst-s5"]
    cut.provider.launch(cut.spec, [request(cut, name) for name in names])
    s2, s3, s4 = (cut.state.by_name(name) for name in names[:3])
    with cut.state.lock:
        s2.state = "deleting"  # a delete under way: Nova keeps the status, task_state says "deleting"
        s3.state = "shutoff"
    cut.state.fail_build(s4, "Exceeded maximum number of retries.")
    nodes = {n.node_id: n for n in cut.provider.list_nodes(cut.spec)}
    assert nodes["burst-s1"].state == CloudState.PENDING
    assert nodes["burst-s2"].state == CloudState.STOPPING and nodes["burst-s2"].extra["task_state"] == "deleting"
    assert nodes["burst-s3"].state == CloudState.STOPPING and nodes["burst-s3"].extra["status"] == "SHUTOFF"
    assert nodes["burst-s4"].state == CloudState.FAILED
    assert nodes["burst-s4"].extra["fault"] == "Exceeded maximum number of retries."
    running = nodes["burst-s5"]
    assert running.state == CloudState.RUNNING and running.provider_ref == cut.state.by_name("burst-s5").ref
    assert running.extra["flavor"] == "m1.small" and running.extra["ip"].startswith("10.0.0.")
    assert running.extra["availability_zone"] == "nova" and "fault" not in running.extra
    assert "adminPass" not in json.dumps([n.extra for n in nodes.values()])


# -- launch behaviour --------------------------------------------------------------------------
def test_no_valid_host_is_capacity_and_the_errored_server_is_deleted(cut: CloudUnderTest) -> None:
    cut.state.inject("create", Fault.CAPACITY)
    [result] = cut.provider.launch(cut.spec, [request(cut, "burst-c1")])
    assert result.error_kind == LaunchErrorKind.CAPACITY and "No valid host" in result.error
    wait_for(lambda: "burst-c1" not in cut.state.names())
    [ref] = [vm.ref for vm in cut.state.deleted.values() if vm.name == "burst-c1"]
    assert cut.app.bodies("DELETE", f"/servers/{ref}")


def test_other_build_fault_is_transient(cut: CloudUnderTest) -> None:
    original = cut.state.schedule_running

    def fail_instead(vm: FakeVm) -> None:
        cut.state.fail_build(vm, "Build of instance aborted: Failed to allocate the network(s), not rescheduling.")

    cut.state.schedule_running = fail_instead  # type: ignore[method-assign]
    try:
        [result] = cut.provider.launch(cut.spec, [request(cut, "burst-t1")])
    finally:
        cut.state.schedule_running = original  # type: ignore[method-assign]
    assert result.error_kind == LaunchErrorKind.TRANSIENT and "Failed to allocate the network" in result.error


def test_build_timeout_reports_launched(cut: CloudUnderTest) -> None:
    cut.state.build_delay_s = 30
    [result] = cut.provider.launch(with_settings(cut, build_timeout_s=0.3), [request(cut, "burst-b1")])
    assert result.ok and result.provider_ref == cut.state.by_name("burst-b1").ref


def test_several_requests_are_all_created_before_any_wait(cut: CloudUnderTest) -> None:
    cut.provider.launch(cut.spec, [request(cut, f"burst-m{i}") for i in range(3)])
    compute = [(m, p) for m, p in cut.state.requests if "/servers" in p]
    posts = [i for i, (m, _) in enumerate(compute) if m == "POST"]
    polls = [i for i, (m, p) in enumerate(compute) if m == "GET" and not p.endswith("/detail")]
    assert len(posts) == 3 and max(posts) < min(polls)


def test_sdk_never_resends_a_create_and_never_sleeps_on_429(cut: CloudUnderTest) -> None:
    retrying = with_settings(cut, max_retries=2)
    cut.state.inject("create", Fault.TIMEOUT)
    [result] = cut.provider.launch(retrying, [request(cut, "burst-n1")])
    assert result.error_kind == LaunchErrorKind.TRANSIENT
    assert len(cut.app.bodies("POST", "/compute/v2.1/servers")) == 1  # keystoneauth would retry a read timeout
    [again] = cut.provider.launch(retrying, [request(cut, "burst-n1")])
    assert again.ok and cut.state.create_calls == ["burst-n1"]

    cut.state.inject("create", Fault.THROTTLED)
    [throttled] = cut.provider.launch(retrying, [request(cut, "burst-n2")])  # a retried 429 would have succeeded
    assert throttled.error_kind == LaunchErrorKind.THROTTLED and throttled.retry_after_s == cut.state.retry_after_s
    cut.state.inject("list", Fault.THROTTLED)
    before = len(cut.app.bodies("GET", "/servers/detail"))
    with pytest.raises(Exception, match="429|rate"):
        cut.provider.list_nodes(retrying)
    assert len(cut.app.bodies("GET", "/servers/detail")) == before + 1


def test_max_retries_retries_a_timed_out_read(cut: CloudUnderTest) -> None:
    cut.provider.launch(cut.spec, [request(cut, "burst-g1")])
    cut.state.inject("list", Fault.TIMEOUT)
    nodes = cut.provider.list_nodes(with_settings(cut, max_retries=1))
    assert [n.node_id for n in nodes] == ["burst-g1"]
    cut.state.inject("list", Fault.TIMEOUT)
    with pytest.raises(Exception, match="timed out"):
        cut.provider.list_nodes(cut.spec)  # max_retries: 0


def test_terminate_deletes_every_server_of_the_node_and_waits(cut: CloudUnderTest) -> None:
    cut.provider.launch(cut.spec, [request(cut, "burst-d1"), request(cut, "burst-d2")])
    cut.provider.terminate(cut.spec, ["burst-d1", "burst-unknown"])
    assert cut.state.names() == {"burst-d2"}  # gone by the time terminate returns
    [ref] = [vm.ref for vm in cut.state.deleted.values() if vm.name == "burst-d1"]
    assert [c.path for c in cut.app.calls if c.method == "DELETE"] == [f"/compute/v2.1/servers/{ref}"]


def test_delete_timeout_raises(cut: CloudUnderTest) -> None:
    cut.provider.launch(cut.spec, [request(cut, "burst-z1")])
    cut.app.delete_delay_s = 30
    with pytest.raises(RuntimeError, match="burst-z1"):
        cut.provider.terminate(with_settings(cut, delete_timeout_s=0.3), ["burst-z1"])


# -- the cross-provider contract (smoke; the conformance suite owns it) -------------------------
@pytest.mark.parametrize("fault", [f for f in Fault if f != Fault.TIMEOUT])
def test_each_create_fault_maps_to_its_kind(cut: CloudUnderTest, fault: Fault) -> None:
    cut.state.inject("create", fault)
    [result] = cut.provider.launch(cut.spec, [request(cut, "burst-f1")])
    assert not result.ok and result.error_kind == EXPECTED_KIND[fault], result
    if fault == Fault.THROTTLED:
        assert result.retry_after_s == cut.state.retry_after_s
    [retry] = cut.provider.launch(cut.spec, [request(cut, "burst-f1")])  # the next call works again
    assert retry.ok, retry


@pytest.mark.parametrize("op", ["list", "delete"])
@pytest.mark.parametrize("fault", list(Fault))
def test_list_and_delete_faults_raise(cut: CloudUnderTest, op: str, fault: Fault) -> None:
    cut.provider.launch(cut.spec, [request(cut, "burst-e1")])
    cut.state.inject(op, fault)
    with pytest.raises(Exception):  # noqa: B017 - any error: the actuator records it
        if op == "list":
            cut.provider.list_nodes(cut.spec)
        else:
            cut.provider.terminate(cut.spec, ["burst-e1"])


def test_other_pools_and_clusters_are_not_listed(cut: CloudUnderTest) -> None:
    other_pool = replace(cut.spec, name="other")
    other_cluster = replace(cut.spec, cluster="elsewhere")
    cut.provider.launch(other_pool, [request(cut, "other-1")])
    cut.provider.launch(other_cluster, [request(cut, "burst-oc")])
    cut.add_foreign_vm("lookalike", {"hybrid-rm-cluster": "conf", "hybrid-rm-pool": "burstx"})
    assert cut.provider.list_nodes(cut.spec) == []
    assert [n.node_id for n in cut.provider.list_nodes(other_pool)] == ["other-1"]


def test_user_data_over_the_limit_is_config_without_any_call(cut: CloudUnderTest) -> None:
    before = len(cut.state.requests)
    [result] = cut.provider.launch(cut.spec, [request(cut, "burst-u1", "x" * (USER_DATA_LIMIT + 1))])
    assert result.error_kind == LaunchErrorKind.CONFIG and len(cut.state.requests) == before
    assert "limit" in result.error
    [fits] = cut.provider.launch(cut.spec, [request(cut, "burst-u2", "y" * USER_DATA_LIMIT)])
    assert fits.ok and cut.state.by_name("burst-u2").user_data == "y" * USER_DATA_LIMIT  # Nova's 65535 base64 cap


# -- other ways in: clouds.yaml, application credential, TLS -----------------------------------
def test_clouds_yaml_cloud(cut: CloudUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"fakestack": {
        "auth": {"auth_url": f"{cut.base_url}/identity", "username": fake.USERNAME, "password": fake.PASSWORD,
                 "project_name": fake.PROJECT_NAME, "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": fake.REGION}}}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    settings = {k: v for k, v in cut.settings.items() if k != "auth"} | {"cloud": "fakestack"}
    spec = replace(cut.spec, settings=settings)
    [result] = cut.provider.launch(spec, [request(cut, "burst-y1")])
    assert result.ok, result
    assert [n.node_id for n in cut.provider.list_nodes(spec)] == ["burst-y1"]
    assert ("GET", "/identity") in cut.state.requests  # the generic password plugin discovered v3


def test_application_credential(cut: CloudUnderTest, monkeypatch: pytest.MonkeyPatch,
                                caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("APP_CRED_SECRET", fake.APP_CRED_SECRET)
    spec = with_settings(cut, auth={"auth_url": f"{cut.base_url}/identity/v3",
                                    "application_credential_id": fake.APP_CRED_ID,
                                    "application_credential_secret_env": "APP_CRED_SECRET"})
    with caplog.at_level(logging.DEBUG):
        [result] = cut.provider.launch(spec, [request(cut, "burst-a1")])
    assert result.ok, result
    token_request = cut.app.bodies("POST", "/auth/tokens")[-1].body
    assert token_request["auth"]["identity"]["methods"] == ["application_credential"]
    assert fake.APP_CRED_SECRET not in caplog.text


def test_unreachable_cloud_is_transient(cut: CloudUnderTest) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    spec = with_settings(cut, auth={**cut.settings["auth"], "auth_url": f"http://127.0.0.1:{port}/identity/v3"})
    [result] = cut.provider.launch(spec, [request(cut, "burst-down")])
    assert result.error_kind == LaunchErrorKind.TRANSIENT and "reach" in result.error, result
    with pytest.raises(Exception):  # noqa: B017
        cut.provider.list_nodes(spec)


def test_tls_with_a_private_ca(tmp_path: Path) -> None:
    with fake.start(tmp_path, tls=True) as cut:
        assert cut.base_url.startswith("https://") and cut.settings["ca_bundle"]
        [result] = cut.provider.launch(cut.spec, [request(cut, "burst-tls")])
        assert result.ok, result
        untrusted = replace(cut.spec, name="burst2",
                            settings={k: v for k, v in cut.settings.items() if k != "ca_bundle"})
        [refused] = cut.provider.launch(untrusted, [request(cut, "burst2-tls")])
        assert refused.error_kind == LaunchErrorKind.CONFIG and "ca_bundle" in refused.error


# -- settings ----------------------------------------------------------------------------------
def config_error(settings: dict) -> str:
    data = {"cluster": "c", "pools": [{"name": "burst", "provider": "openstack", "settings": settings}]}
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    return str(caught.value)


AUTH = {"auth_url": "https://keystone.example.org:5000/v3", "username": "u", "password_env": "OS_PASSWORD",
        "project_name": "p"}


def test_settings_errors_name_the_field() -> None:
    base = {"flavor": "m1.small", "image": "ubuntu"}
    assert "'cloud'" in config_error(base) and "'auth'" in config_error(base)
    assert "exactly one of 'cloud'" in config_error(base | {"cloud": "x", "auth": AUTH})
    assert "pools[0].settings.flavor" in config_error({"image": "i", "cloud": "x"})
    assert "pools[0].settings.request_timeout_s" in config_error(base | {"cloud": "x", "request_timeout_s": 0})
    assert "pools[0].settings.max_retries" in config_error(base | {"cloud": "x", "max_retries": -1})
    assert "pools[0].settings.flavour" in config_error(base | {"cloud": "x", "flavour": "typo"})
    assert "pools[0].settings.auth.password" in config_error(base | {"auth": AUTH | {"password": "hunter2"}})
    message = config_error(base | {"auth": AUTH | {"password_env": "correct horse battery"}})
    assert "pools[0].settings.auth.password_env" in message and "correct horse" not in message
    assert "password_env" in config_error(base | {"auth": {k: v for k, v in AUTH.items() if k != "password_env"}})
    both = AUTH | {"application_credential_id": "a", "application_credential_secret_env": "S"}
    assert "not both" in config_error(base | {"auth": both})
    assert "auth_url" in config_error(base | {"auth": AUTH | {"auth_url": "keystone:5000"}})
    with pytest.raises(ValidationError) as caught:
        Settings.model_validate(base | {"auth": AUTH | {"password_env": "s3cr3t!value"}})
    assert "s3cr3t!value" not in str(caught.value)
    parsed = Settings.model_validate(base | {"cloud": "x"})
    assert (parsed.request_timeout_s, parsed.max_retries, parsed.build_timeout_s) == (30.0, 2, 600.0)


# -- import cost, missing SDK, secrets ---------------------------------------------------------
def run_python(code: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                          check=False, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_does_not_import_the_sdk() -> None:
    out = run_python(
        "import sys, providers.openstack as m\n"
        "m.Settings.model_validate({'cloud': 'x', 'flavor': 'f', 'image': 'i'})\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'openstack', 'keystoneauth1', 'requests'}))")
    assert out == "[]"


def test_missing_sdk_says_how_to_install() -> None:
    out = run_python(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('openstack', 'keystoneauth1'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from agents.settings import AgentSettings\n"
        "from providers.base import LaunchRequest, PoolSpec\n"
        "from providers.openstack import OpenStackProvider\n"
        "pool = PoolSpec('burst', 'c', 1, settings={'cloud': 'x', 'flavor': 'f', 'image': 'i'})\n"
        "a = AgentSettings('burst-1', 'burst', 'c', 'redis://127.0.0.1', ('q',))\n"
        "[r] = OpenStackProvider('/tmp', 'c').launch(pool, [LaunchRequest('burst-1', a, '')])\n"
        "print(r.error_kind, r.error)\n"
        "try:\n"
        "    OpenStackProvider('/tmp', 'c').list_nodes(pool)\n"
        "except Exception as e:\n"
        "    print('raised', e)\n")
    assert "config" in out and "pip install 'hybrid-rm[openstack]'" in out and "raised" in out


def test_no_secret_in_logs_errors_or_reprs(cut: CloudUnderTest, caplog: pytest.LogCaptureFixture,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    with caplog.at_level(logging.DEBUG):
        [ok] = cut.provider.launch(cut.spec, [request(cut, "burst-p1")])
        nodes = cut.provider.list_nodes(cut.spec)
        cut.state.inject("create", Fault.AUTH)
        [denied] = cut.provider.launch(cut.spec, [request(cut, "burst-p2")])
        cut.provider.terminate(cut.spec, ["burst-p1"])
        monkeypatch.setenv(fake.PASSWORD_ENV, "wrong-" + fake.PASSWORD)
        [wrong] = cut.provider.launch(with_settings(cut, region_name="RegionOne", max_retries=1),
                                      [request(cut, "burst-p3")])
        monkeypatch.delenv(fake.PASSWORD_ENV)
        [missing] = cut.provider.launch(with_settings(cut, max_retries=1, build_timeout_s=59),
                                        [request(cut, "burst-p4")])
    assert ok.ok and denied.error_kind == LaunchErrorKind.AUTH and wrong.error_kind == LaunchErrorKind.AUTH
    assert missing.error_kind == LaunchErrorKind.AUTH and fake.PASSWORD_ENV in missing.error
    assert "pool=burst node=burst-p2" in caplog.text  # failures are logged with pool and node
    everything = caplog.text + repr(cut.provider) + repr(nodes) + repr([denied, wrong, missing])
    assert "POST http" in caplog.text, "the SDK's debug request log was not captured: the check would be void"
    assert fake.PASSWORD not in everything
    assert fake.PASSWORD not in repr(Settings.model_validate(cut.settings))


def test_a_separate_manager_process_reaches_the_fake(cut: CloudUnderTest) -> None:
    cut.provider.launch(cut.spec, [request(cut, "burst-sub")])
    code = ("import json, sys\n"
            "from providers.base import PoolSpec\n"
            "from providers import make_provider\n"
            "p = make_provider('openstack', state_dir='/tmp', cluster='conf')\n"
            "spec = PoolSpec('burst', 'conf', 2, settings=json.loads(sys.argv[1]))\n"
            "print([n.node_id for n in p.list_nodes(spec)])\n")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(cut.settings)], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False,
                          env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), **cut.env})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['burst-sub']"
