"""Azure provider: what it sends to ARM, how it reads Azure's answers, and how it keeps secrets.

The real ``azure-identity`` and ``azure-mgmt-compute`` talk HTTPS to ``tests/fakes/azure.py``; the
assertions read what the fake received (PUT bodies, request lines), so they check the wire format,
not our own calls into the SDK.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from agents.settings import AgentSettings
from providers.azure import AzureProviderError, Settings
from providers.base import CloudState, LaunchErrorKind, LaunchRequest, PoolSpec, tags_for
from tests.fakes.azure import SECRET_ENV, SUBNET_ID, pool_settings, start_with_fake
from tests.fakes.common import Fault, FakeVm

ROOT = Path(__file__).resolve().parent.parent
VM_PATH = re.compile(r"/providers/Microsoft\.Compute/virtualMachines/[^/]+$")
LIST_PATH = re.compile(r"/providers/Microsoft\.Compute/virtualMachines$")
OP_PATH = re.compile(r"/providers/Microsoft\.Compute/locations/[^/]+/operations/[^/]+$")


def request(node_id: str, user_data: str = "#cloud-config\nruncmd: [echo hi]\n") -> LaunchRequest:
    agent = AgentSettings(node_id=node_id, pool="burst", cluster="conf", broker_url="redis://broker:6379/0",
                          queues=("default",))
    return LaunchRequest(node_id, agent, user_data)


def arm_calls(state, since: int = 0) -> list[tuple[str, str]]:
    """The ARM requests after index ``since``, each path reduced to its kind (vm / list / operation)."""
    calls = []
    for method, path in state.requests[since:]:
        if OP_PATH.search(path):
            calls.append((method, "operation"))
        elif LIST_PATH.search(path):
            calls.append((method, "list"))
        elif VM_PATH.search(path):
            calls.append((method, "vm"))
    return calls


def count(state, method: str, name: str) -> int:
    return sum(1 for m, path in state.requests if m == method and path.endswith(f"/virtualMachines/{name}"))


# -- what launch sends -------------------------------------------------------------------
def test_launch_puts_a_self_contained_linux_vm_and_waits_for_it(tmp_path: Path) -> None:
    user_data = "#cloud-config\nwrite_files:\n- path: /etc/rm/agent.json\n  content: '{\"node\": \"é\"}'\n"
    with start_with_fake(tmp_path) as (cloud, fake):
        results = cloud.provider.launch(cloud.spec, [request("burst-n1", user_data), request("burst-n2")])
        assert [r.ok for r in results] == [True, True], results
        assert results[0].provider_ref.endswith("/resourceGroups/rg-burst/providers/Microsoft.Compute/virtualMachines/burst-n1")

        body = fake.bodies["burst-n1"]
        assert body["location"] == "westeurope"
        assert body["tags"] == tags_for(cloud.spec, "burst-n1")
        props = body["properties"]
        assert props["hardwareProfile"] == {"vmSize": "Standard_D4s_v3"}
        assert props["storageProfile"]["imageReference"] == {
            "publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}
        assert props["storageProfile"]["osDisk"] == {"createOption": "FromImage", "deleteOption": "Delete"}
        os_profile = props["osProfile"]
        assert os_profile["computerName"] == "burst-n1"
        assert os_profile["adminUsername"] == "rmadmin"
        assert base64.b64decode(os_profile["customData"]).decode() == user_data
        assert os_profile["linuxConfiguration"] == {
            "disablePasswordAuthentication": True,
            "ssh": {"publicKeys": [{"path": "/home/rmadmin/.ssh/authorized_keys", "keyData": cloud.settings["ssh_public_key"]}]},
        }
        network = props["networkProfile"]
        assert network["networkApiVersion"] == "2022-11-01"
        assert "networkInterfaces" not in network  # the NIC is created with the VM, not referenced
        [nic] = network["networkInterfaceConfigurations"]
        assert nic["name"] == "burst-n1-nic"
        assert nic["properties"]["deleteOption"] == "Delete" and nic["properties"]["primary"] is True
        [ipconfig] = nic["properties"]["ipConfigurations"]
        assert ipconfig["properties"]["subnet"] == {"id": SUBNET_ID}
        assert "priority" not in props and "billingProfile" not in props

        assert cloud.state.by_name("burst-n1").user_data == user_data
        # launch awaited the operation: the VMs are already running when it returns
        nodes = {n.node_id: n for n in cloud.provider.list_nodes(cloud.spec)}
        assert {k: v.state for k, v in nodes.items()} == {"burst-n1": CloudState.RUNNING, "burst-n2": CloudState.RUNNING}
        assert nodes["burst-n1"].extra == {"size": "Standard_D4s_v3", "location": "westeurope",
                                           "provisioning_state": "Succeeded", "spot": False}


def test_api_calls_of_launch_list_and_terminate(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        assert cloud.provider.launch(cloud.spec, [request("burst-c1")])[0].ok
        token_calls = [(m, p.split("/", 2)[2]) for m, p in cloud.state.requests if not p.startswith("/subscriptions")]
        assert token_calls == [("GET", "v2.0/.well-known/openid-configuration"), ("POST", "oauth2/v2.0/token")]
        launch = arm_calls(cloud.state)
        assert launch[:2] == [("GET", "vm"), ("PUT", "vm")]
        assert set(launch[2:-1]) == {("GET", "operation")} and launch[-1] == ("GET", "vm")  # poll, then final GET

        mark = len(cloud.state.requests)
        cloud.provider.list_nodes(cloud.spec)
        assert arm_calls(cloud.state, mark) == [("GET", "list")]

        mark = len(cloud.state.requests)
        cloud.provider.terminate(cloud.spec, ["burst-c1"])
        terminate = arm_calls(cloud.state, mark)
        assert terminate[:2] == [("GET", "vm"), ("DELETE", "vm")]
        assert set(terminate[2:]) == {("GET", "operation")}
        assert cloud.state.by_name("burst-c1") is None
        assert len([m for m, p in cloud.state.requests if m == "POST"]) == 1  # the token was cached


def test_spot_image_id_and_disk_size(tmp_path: Path) -> None:
    image_id = "/subscriptions/x/resourceGroups/img/providers/Microsoft.Compute/galleries/g/images/agent/versions/1.2.0"
    overrides = {"image": None, "image_id": image_id, "os_disk_size_gb": 64,
                 "spot": {"enabled": True, "eviction_policy": "Deallocate", "max_price": 0.05}}
    with start_with_fake(tmp_path, **overrides) as (cloud, fake):
        assert cloud.provider.launch(cloud.spec, [request("burst-s1", "")])[0].ok
        props = fake.bodies["burst-s1"]["properties"]
        assert props["priority"] == "Spot"
        assert props["evictionPolicy"] == "Deallocate"
        assert props["billingProfile"] == {"maxPrice": 0.05}
        assert props["storageProfile"]["imageReference"] == {"id": image_id}
        assert props["storageProfile"]["osDisk"]["diskSizeGB"] == 64
        assert "customData" not in props["osProfile"]  # no user data: nothing sent
        [node] = cloud.provider.list_nodes(cloud.spec)
        assert node.extra["spot"] is True and node.extra["eviction_policy"] == "Deallocate"


def test_spot_defaults_pay_up_to_on_demand_and_delete_on_eviction(tmp_path: Path) -> None:
    with start_with_fake(tmp_path, spot={"enabled": True}) as (cloud, fake):
        assert cloud.provider.launch(cloud.spec, [request("burst-s2")])[0].ok
        props = fake.bodies["burst-s2"]["properties"]
        assert (props["priority"], props["evictionPolicy"], props["billingProfile"]) == ("Spot", "Delete", {"maxPrice": -1})


def test_every_create_is_begun_before_any_is_awaited(tmp_path: Path) -> None:
    """Ten VMs must not take ten provisioning times: all PUTs go out before launch waits on one."""
    with start_with_fake(tmp_path) as (cloud, _fake):
        cloud.state.build_delay_s = 3600  # a VM runs only when this test releases it
        seen: dict[str, int] = {}
        done = threading.Event()

        def release() -> None:
            guard = time.monotonic() + 30  # a failure guard, not a performance limit
            while len(cloud.state.create_calls) < 4 and time.monotonic() < guard and not done.is_set():
                time.sleep(0.02)
            seen["created_before_any_ran"] = len(cloud.state.create_calls)
            while not done.is_set():
                for vm in list(cloud.state.vms.values()):
                    cloud.state.set_running(vm)
                time.sleep(0.02)

        helper = threading.Thread(target=release, daemon=True)
        helper.start()
        try:
            results = cloud.provider.launch(cloud.spec, [request(f"burst-p{i}") for i in range(4)])
        finally:
            done.set()
            helper.join()
        assert all(r.ok for r in results), results
        assert seen["created_before_any_ran"] == 4
        assert cloud.state.create_calls == [f"burst-p{i}" for i in range(4)]


# -- idempotency -------------------------------------------------------------------------
def test_launch_after_a_timed_out_create_finds_the_vm_instead_of_creating_another(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        cloud.state.inject("create", Fault.TIMEOUT)
        [first] = cloud.provider.launch(cloud.spec, [request("burst-t1")])
        assert (first.ok, first.error_kind) == (False, LaunchErrorKind.TRANSIENT)
        assert "timed out" in first.error
        [again] = cloud.provider.launch(cloud.spec, [request("burst-t1")])
        assert again.ok and again.provider_ref.endswith("/virtualMachines/burst-t1")
        assert cloud.state.create_calls == ["burst-t1"]
        assert count(cloud.state, "PUT", "burst-t1") == 1  # max_retries 0: the SDK did not resend it either


def test_a_stranger_vm_with_the_node_name_is_a_config_error_not_adopted(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        cloud.add_foreign_vm("burst-x1", {"owner": "someone-else"})
        [result] = cloud.provider.launch(cloud.spec, [request("burst-x1")])
        assert (result.ok, result.error_kind) == (False, LaunchErrorKind.CONFIG)
        assert count(cloud.state, "PUT", "burst-x1") == 0


def test_allocation_failure_via_the_operation_then_relaunch_of_that_id(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, fake):
        fake.capacity_mode = "allocation"
        cloud.state.inject("create", Fault.CAPACITY)
        [result] = cloud.provider.launch(cloud.spec, [request("burst-f1")])
        assert (result.ok, result.error_kind) == (False, LaunchErrorKind.CAPACITY)
        assert result.error.startswith("AllocationFailed: Allocation failed")
        [node] = cloud.provider.list_nodes(cloud.spec)
        assert (node.node_id, node.state) == ("burst-f1", CloudState.FAILED)
        [again] = cloud.provider.launch(cloud.spec, [request("burst-f1")])
        assert (again.ok, again.error_kind) == (False, LaunchErrorKind.CAPACITY)
        assert cloud.state.create_calls == ["burst-f1"]


# -- error classes -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("knob", "fault", "kind", "code"),
    [
        (("capacity_mode", "sku"), Fault.CAPACITY, LaunchErrorKind.CAPACITY, "409 SkuNotAvailable"),
        (("auth_mode", "403"), Fault.AUTH, LaunchErrorKind.AUTH, "403 AuthorizationFailed"),
        (("auth_mode", "401"), Fault.AUTH, LaunchErrorKind.AUTH, "401 AuthenticationFailed"),
        (None, Fault.QUOTA, LaunchErrorKind.QUOTA, "409 OperationNotAllowed: Operation could not be completed as it "
                                                   "results in exceeding approved standardDSv3Family Cores quota"),
        (None, Fault.BAD_CONFIG, LaunchErrorKind.CONFIG, "404 PlatformImageNotFound"),
        (None, Fault.SERVER_ERROR, LaunchErrorKind.TRANSIENT, "500 InternalServerError"),
    ],
)
def test_arm_errors_map_to_launch_error_kinds(tmp_path: Path, caplog: pytest.LogCaptureFixture, knob, fault, kind, code) -> None:
    with start_with_fake(tmp_path) as (cloud, fake):
        if knob:
            setattr(fake, *knob)
        cloud.state.inject("create", fault)
        with caplog.at_level(logging.WARNING, logger="providers.azure"):
            [result] = cloud.provider.launch(cloud.spec, [request("burst-e1")])
        assert (result.ok, result.error_kind) == (False, kind)
        assert result.error.startswith(code)
        failures = [r.getMessage() for r in caplog.records if r.name == "providers.azure"]
        assert len(failures) == 1 and "pool=burst node=burst-e1" in failures[0]
        # The next call works again (a 401/403 drops the cached client; it is rebuilt)
        assert cloud.provider.launch(cloud.spec, [request("burst-e2")])[0].ok


def test_throttling_carries_retry_after(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        cloud.state.retry_after_s = 13
        cloud.state.inject("create", Fault.THROTTLED)
        [result] = cloud.provider.launch(cloud.spec, [request("burst-r1")])
        assert (result.error_kind, result.retry_after_s) == (LaunchErrorKind.THROTTLED, 13.0)


def test_unknown_subnet_is_a_config_error(tmp_path: Path) -> None:
    other = SUBNET_ID.replace("/subnets/agents", "/subnets/missing")
    with start_with_fake(tmp_path, subnet_id=other) as (cloud, _fake):
        [result] = cloud.provider.launch(cloud.spec, [request("burst-b1")])
        assert (result.error_kind, result.error.split(":")[0]) == (LaunchErrorKind.CONFIG, "400 InvalidResourceReference")
        assert cloud.state.create_calls == []


def test_unknown_resource_group_is_config_and_list_raises(tmp_path: Path) -> None:
    with start_with_fake(tmp_path, resource_group="rg-typo") as (cloud, _fake):
        [result] = cloud.provider.launch(cloud.spec, [request("burst-g1")])
        assert (result.error_kind, result.error.split(":")[0]) == (LaunchErrorKind.CONFIG, "404 ResourceGroupNotFound")
        assert count(cloud.state, "PUT", "burst-g1") == 0
        with pytest.raises(Exception, match="ResourceGroupNotFound"):
            cloud.provider.list_nodes(cloud.spec)


def test_sdk_retries_are_bounded_by_max_retries(tmp_path: Path) -> None:
    with start_with_fake(tmp_path, max_retries=1) as (cloud, _fake):
        cloud.state.inject("create", Fault.SERVER_ERROR)
        assert cloud.provider.launch(cloud.spec, [request("burst-m1")])[0].ok
        assert count(cloud.state, "PUT", "burst-m1") == 2
        cloud.state.inject("create", Fault.SERVER_ERROR, times=2)
        [result] = cloud.provider.launch(cloud.spec, [request("burst-m2")])
        assert result.error_kind is LaunchErrorKind.TRANSIENT and count(cloud.state, "PUT", "burst-m2") == 2


def test_untrusted_certificate_is_a_config_error(tmp_path: Path) -> None:
    with start_with_fake(tmp_path, ca_bundle=None) as (cloud, _fake):
        [result] = cloud.provider.launch(cloud.spec, [request("burst-ca")])
        assert result.error_kind is LaunchErrorKind.CONFIG
        assert "TLS certificate not trusted (settings.ca_bundle?)" in result.error
        assert cloud.state.requests == []  # the TLS handshake failed: no request reached the fake


def test_unreachable_token_endpoint_is_transient_not_auth(tmp_path: Path) -> None:
    with start_with_fake(tmp_path, authority_host="https://127.0.0.1:1") as (cloud, _fake):
        [result] = cloud.provider.launch(cloud.spec, [request("burst-un")])
        assert result.error_kind is LaunchErrorKind.TRANSIENT and "cannot reach Azure" in result.error


def test_user_data_over_the_limit_and_bad_node_ids_fail_without_any_call(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        assert cloud.provider.user_data_limit == 65535
        results = cloud.provider.launch(cloud.spec, [request("burst-u1", "x" * 65536), request("burst_u2"),
                                                     request("burst-u3", "é" * 32768)])
        assert [r.error_kind for r in results] == [LaunchErrorKind.CONFIG] * 3
        assert results[0].error == "user data too large: 65536 bytes, over Azure's custom data limit of 65535 bytes"
        assert cloud.state.requests == []


# -- list and terminate ------------------------------------------------------------------
def test_list_follows_pages_and_returns_only_this_pools_vms(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, fake):
        fake.page_size = 2
        other_pool = PoolSpec(name="other", cluster="conf", slots=2, settings=cloud.settings)
        other_cluster = PoolSpec(name="burst", cluster="elsewhere", slots=2, settings=cloud.settings)
        assert all(r.ok for r in cloud.provider.launch(cloud.spec, [request(f"burst-l{i}") for i in range(3)]))
        assert cloud.provider.launch(other_pool, [request("other-l9")])[0].ok
        assert cloud.provider.launch(other_cluster, [request("burst-z9")])[0].ok
        cloud.add_foreign_vm("web-1", {})
        cloud.add_foreign_vm("burst-l7", {"hybrid-rm-cluster": "conf"})  # no pool or node tag
        mark = len(cloud.state.requests)
        nodes = cloud.provider.list_nodes(cloud.spec)
        assert sorted(n.node_id for n in nodes) == ["burst-l0", "burst-l1", "burst-l2"]
        assert all(n.pool == "burst" and n.provider_ref.endswith(n.node_id) for n in nodes)
        assert arm_calls(cloud.state, mark) == [("GET", "list")] * 4  # 7 VMs, 2 per page
        assert [n.node_id for n in cloud.provider.list_nodes(other_pool)] == ["other-l9"]


def test_list_states_follow_provisioning_state(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        for name, state in [("burst-k1", "building"), ("burst-k2", "running"), ("burst-k3", "deleting"),
                            ("burst-k4", "error")]:
            vm = FakeVm(ref=f"ref-{name}", name=name, tags=tags_for(cloud.spec, name), user_data="", state=state)
            with cloud.state.lock:
                cloud.state.vms[vm.ref] = vm
        states = {n.node_id: n.state for n in cloud.provider.list_nodes(cloud.spec)}
        assert states == {"burst-k1": CloudState.PENDING, "burst-k2": CloudState.RUNNING,
                          "burst-k3": CloudState.STOPPING, "burst-k4": CloudState.FAILED}


def test_terminate_deletes_ours_skips_strangers_and_raises_on_errors(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        assert all(r.ok for r in cloud.provider.launch(cloud.spec, [request("burst-d1"), request("burst-d2")]))
        cloud.add_foreign_vm("burst-d3", {"owner": "someone-else"})
        cloud.provider.terminate(cloud.spec, ["burst-d1", "burst-d3", "burst-never"])
        assert cloud.state.names() == {"burst-d2", "burst-d3"}
        assert count(cloud.state, "DELETE", "burst-d3") == 0 and count(cloud.state, "DELETE", "burst-never") == 0

        cloud.state.inject("delete", Fault.SERVER_ERROR)
        with pytest.raises(AzureProviderError, match="burst-d2: 500 InternalServerError"):
            cloud.provider.terminate(cloud.spec, ["burst-d2"])
        cloud.provider.terminate(cloud.spec, ["burst-d2"])
        assert cloud.state.names() == {"burst-d3"}


def test_list_and_terminate_raise_on_cloud_errors(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        cloud.state.inject("list", Fault.THROTTLED)
        with pytest.raises(Exception, match="TooManyRequests"):
            cloud.provider.list_nodes(cloud.spec)
        cloud.state.inject("list", Fault.AUTH)
        with pytest.raises(Exception, match="AuthenticationFailed"):
            cloud.provider.list_nodes(cloud.spec)
        assert cloud.provider.list_nodes(cloud.spec) == []


# -- credentials and secrets -------------------------------------------------------------
def test_token_endpoint_rejection_is_auth_and_the_next_call_works(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, fake):
        fake.token_faults = 1
        [result] = cloud.provider.launch(cloud.spec, [request("burst-a1")])
        assert result.error_kind is LaunchErrorKind.AUTH and "AADSTS7000215" in result.error
        assert cloud.state.create_calls == []
        assert cloud.provider.launch(cloud.spec, [request("burst-a1")])[0].ok


def test_arm_rejects_calls_without_a_token_it_issued(tmp_path: Path) -> None:
    import requests

    with start_with_fake(tmp_path) as (cloud, _fake):
        url = f"{cloud.base_url}/subscriptions/{cloud.settings['subscription_id']}/resourceGroups/rg-burst" \
              "/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01"
        bare = requests.get(url, verify=cloud.settings["ca_bundle"], timeout=5)
        forged = requests.get(url, verify=cloud.settings["ca_bundle"], timeout=5, headers={"Authorization": "Bearer x"})
        assert (bare.status_code, bare.json()["error"]["code"]) == (401, "AuthenticationFailed")
        assert (forged.status_code, forged.json()["error"]["code"]) == (401, "InvalidAuthenticationToken")


def test_wrong_secret_is_auth_never_leaks_and_a_fixed_secret_is_picked_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        good = cloud.env[SECRET_ENV]
        wrong = "Wr0ng~Secret.Value-" + "q" * 12
        monkeypatch.setenv(SECRET_ENV, wrong)
        caplog.set_level(logging.DEBUG)  # every logger, SDK and MSAL included
        [result] = cloud.provider.launch(cloud.spec, [request("burst-w1")])
        assert result.error_kind is LaunchErrorKind.AUTH
        assert "AADSTS7000215" in result.error
        with pytest.raises(Exception) as raised:
            cloud.provider.list_nodes(cloud.spec)
        monkeypatch.setenv(SECRET_ENV, good)
        assert cloud.provider.launch(cloud.spec, [request("burst-w1")])[0].ok
        nodes = cloud.provider.list_nodes(cloud.spec)
        for text in (caplog.text, result.error, str(raised.value), repr(cloud.provider), repr(nodes),
                     repr(Settings.model_validate(cloud.settings))):
            assert wrong not in text and good not in text


def test_missing_secret_variable_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        monkeypatch.delenv(SECRET_ENV)
        [result] = cloud.provider.launch(cloud.spec, [request("burst-v1")])
        assert result.error_kind is LaunchErrorKind.AUTH and SECRET_ENV in result.error
        with pytest.raises(AzureProviderError, match=SECRET_ENV):
            cloud.provider.list_nodes(cloud.spec)
        assert cloud.state.requests == []


# -- settings ----------------------------------------------------------------------------
def _settings(**overrides):
    return pool_settings("https://127.0.0.1:1", None, **overrides)


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"subscription_id": "my-subscription"}, "subscription_id", "must be a GUID"),
        ({"subnet_id": "agents"}, "subnet_id", "subnet's ARM id"),
        ({"image_id": "/subscriptions/x/images/y"}, None, "exactly one of image"),
        ({"image": None}, None, "exactly one of image"),
        ({"client_id": None}, None, "missing: client_id"),
        ({"ssh_public_key": "AAAAB3NzaC1yc2E"}, "ssh_public_key", "OpenSSH"),
        ({"resource_manager_url": "http://127.0.0.1:1"}, "resource_manager_url", "https://"),
        ({"spot": {"enabled": True, "eviction_policy": "Stop"}}, "spot.eviction_policy", "'Delete' or 'Deallocate'"),
        ({"spot": {"enabled": True, "max_price": 0}}, "spot.max_price", "-1"),
        ({"request_timeout_s": 0}, "request_timeout_s", "greater than 0"),
        ({"max_retries": -1}, "max_retries", "greater than or equal to 0"),
        ({"vm_sise": "Standard_B2s"}, "vm_sise", "Extra inputs"),
        ({"image": {"publisher": "Canonical", "offer": "o"}}, "image.sku", "Field required"),
    ],
)
def test_settings_errors_name_the_field(overrides, field, words) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate(_settings(**overrides))
    errors = raised.value.errors()
    assert len(errors) == 1, errors
    assert ".".join(str(p) for p in errors[0]["loc"]) == (field or "")
    assert words in errors[0]["msg"]


def test_a_secret_pasted_into_client_secret_env_is_refused_without_echoing_it() -> None:
    secret = "Q~8x.Fak3-s3cret~value"
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate(_settings(client_secret_env=secret))
    assert "NAME of an environment variable" in str(raised.value)
    assert secret not in str(raised.value)


def test_settings_defaults_and_normalization() -> None:
    settings = Settings.model_validate({k: v for k, v in _settings().items()
                                        if k not in {"request_timeout_s", "max_retries", "resource_manager_url",
                                                     "authority_host", "polling_interval_s"}})
    assert (settings.request_timeout_s, settings.max_retries) == (30.0, 2)
    assert settings.resource_manager_url == "https://management.azure.com"
    assert settings.authority_host == "https://login.microsoftonline.com"
    assert settings.scope == "https://management.azure.com/.default"
    assert settings.spot.enabled is False
    china = Settings.model_validate(_settings(resource_manager_url="https://management.chinacloudapi.cn/",
                                              authority_host="login.chinacloudapi.cn"))
    assert china.scope == "https://management.chinacloudapi.cn/.default"
    assert china.authority_host == "https://login.chinacloudapi.cn"
    # DefaultAzureCredential: no service principal fields at all
    assert Settings.model_validate(_settings(tenant_id=None, client_id=None, client_secret_env=None)).client_id is None


def test_config_loader_reports_pool_settings_fields() -> None:
    from rm.config import ConfigError, parse_config

    config = {"cluster": "demo", "pools": [
        {"name": "burst", "provider": "azure", "slots": 2, "max_nodes": 2, "settings": _settings(subnet_id="agents")}]}
    with pytest.raises(ConfigError, match=r"pools\[0\]\.settings\.subnet_id: .*subnet's ARM id"):
        parse_config(config)


def test_invalid_settings_in_launch_are_config_results(tmp_path: Path) -> None:
    from providers.azure import PROVIDER

    provider = PROVIDER(state_dir=tmp_path, cluster="conf")
    spec = PoolSpec(name="burst", cluster="conf", slots=2, settings=_settings(subnet_id="agents"))
    [result] = provider.launch(spec, [request("burst-i1")])
    assert result.error_kind is LaunchErrorKind.CONFIG and "settings.subnet_id" in result.error
    with pytest.raises(AzureProviderError, match="settings.subnet_id"):
        provider.list_nodes(spec)


# -- packaging ---------------------------------------------------------------------------
def _run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=120)


def test_importing_the_module_does_not_import_the_sdk() -> None:
    out = _run("""
        import sys
        import providers.azure
        from providers import settings_model
        settings_model("azure")
        print(sorted(m for m in sys.modules if m == "azure" or m.startswith(("azure.", "msal"))))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_missing_sdk_says_how_to_install_it() -> None:
    out = _run("""
        import sys
        class NoAzure:
            def find_spec(self, name, path=None, target=None):
                if name == "azure" or name.startswith("azure."):
                    raise ImportError(f"No module named {name!r}")
        sys.meta_path.insert(0, NoAzure())
        from agents.settings import AgentSettings
        from providers.azure import PROVIDER
        from providers.base import LaunchRequest, PoolSpec
        from tests.fakes.azure import pool_settings
        spec = PoolSpec("burst", "conf", 2, settings=pool_settings("https://127.0.0.1:1", None))
        agent = AgentSettings("burst-1", "burst", "conf", "redis://x", ("q",))
        provider = PROVIDER(state_dir=".", cluster="conf")
        [result] = provider.launch(spec, [LaunchRequest("burst-1", agent, "")])
        print(result.error_kind, result.error)
        try:
            provider.list_nodes(spec)
        except ImportError as error:
            print("raised:", error)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("config ") and "pip install 'hybrid-rm[azure]'" in out.stdout
    assert "raised: the Azure provider needs the Azure SDK; install it with: pip install 'hybrid-rm[azure]'" in out.stdout


def test_a_separate_manager_process_uses_the_fake_with_the_given_env(tmp_path: Path) -> None:
    with start_with_fake(tmp_path) as (cloud, _fake):
        assert cloud.provider.launch(cloud.spec, [request("burst-h1")])[0].ok
        clean = {k: v for k, v in os.environ.items() if k != SECRET_ENV}
        out = subprocess.run(
            [sys.executable, "-c", textwrap.dedent("""
                import json, sys
                from agents.settings import AgentSettings
                from providers import make_provider
                from providers.base import LaunchRequest, PoolSpec
                spec = PoolSpec("burst", "conf", 2, settings=json.loads(sys.argv[1]))
                provider = make_provider("azure", state_dir=".", cluster="conf")
                agent = AgentSettings("burst-h2", "burst", "conf", "redis://x", ("q",))
                [result] = provider.launch(spec, [LaunchRequest("burst-h2", agent, "#cloud-config\\n")])
                print(json.dumps({"ok": result.ok, "nodes": sorted(n.node_id for n in provider.list_nodes(spec))}))
            """), json.dumps(cloud.settings)],
            cwd=ROOT, env={**clean, **cloud.env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout.strip().splitlines()[-1]) == {"ok": True, "nodes": ["burst-h1", "burst-h2"]}
