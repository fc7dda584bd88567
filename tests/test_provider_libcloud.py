"""The Libcloud provider: what reaches the wire, how it is configured, and what it never leaks.

The shared conformance suite (``tests/test_provider_conformance.py``) checks the contract; these
tests check what is specific to Libcloud: the EC2 Query API parameters the fake received
(tags, ClientToken, base64 user data, ``tag:`` filters), the EC2 error codes, our bounded
retries, TLS through a pinned CA bundle, the settings an admin writes, the lazy import, and
the generic (non-EC2) path through Libcloud's real OpenStack driver talking HTTP to a small
Nova/Keystone fake defined here.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agents.settings import AgentSettings
from providers.base import (
    TAG_CLUSTER,
    TAG_NODE,
    TAG_POOL,
    CloudState,
    LaunchErrorKind,
    LaunchRequest,
    PoolSpec,
)
from providers.libcloud import (
    DEFAULT_THROTTLE_S,
    INSTALL_HINT,
    PROVIDER,
    Settings,
    client_token,
)
from tests.fakes.common import CloudUnderTest, Fault
from tests.fakes.ec2 import ACCESS_KEY, SECRET_ENV, fake_for, patched_env, start
from tests.fakes.server import serve

REPO_ROOT = Path(__file__).resolve().parent.parent


def request(node_id: str, user_data: str = "#cloud-config\nruncmd: [echo hello]\n") -> LaunchRequest:
    agent = AgentSettings(node_id=node_id, pool="burst", cluster="conf", broker_url="redis://unused", queues=("rm.conf",))
    return LaunchRequest(node_id, agent, user_data)


def eventually(what: str, predicate: Callable[[], object], timeout_s: float = 30.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudUnderTest]:
    with start(tmp_path) as under_test:
        yield under_test


def calls(cloud: CloudUnderTest, action: str) -> list[dict[str, str]]:
    return [params for name, params in fake_for(cloud.state).calls if name == action]


# -- the EC2 wire --------------------------------------------------------------------------
def test_run_instances_carries_tags_token_user_data_and_create_args(cloud: CloudUnderTest) -> None:
    user_data = "#cloud-config\nwrite_files:\n- path: /etc/x\n  content: \"é ✓\"\n"
    [result] = cloud.provider.launch(cloud.spec, [request("burst-0a0a0a", user_data)])
    assert result.ok, result
    [run] = calls(cloud, "RunInstances")
    assert run["ImageId"] == "ami-0123456789abcdef0" and run["InstanceType"] == "t3.medium"
    assert run["MinCount"] == run["MaxCount"] == "1"
    assert base64.b64decode(run["UserData"]).decode() == user_data
    assert run["ClientToken"] == client_token(cloud.spec, "burst-0a0a0a")
    assert len(run["ClientToken"]) <= 64
    assert run["KeyName"] == "hybrid-rm" and run["SecurityGroup.1"] == "burst-agents"
    assert run["TagSpecification.1.ResourceType"] == "instance"
    tags = {run[k]: run[k[:-4] + ".Value"] for k in run if k.startswith("TagSpecification.1.Tag.") and k.endswith(".Key")}
    assert tags == {"Name": "burst-0a0a0a", TAG_CLUSTER: "conf", TAG_POOL: "burst", TAG_NODE: "burst-0a0a0a"}
    vm = cloud.state.by_name("burst-0a0a0a")
    assert vm is not None and vm.ref == result.provider_ref and vm.user_data == user_data


def test_listing_filters_on_the_server_by_cluster_and_pool_tags(cloud: CloudUnderTest) -> None:
    cloud.provider.list_nodes(cloud.spec)
    [describe] = calls(cloud, "DescribeInstances")
    filters = {describe[f"Filter.{n}.Name"]: describe[f"Filter.{n}.Value.1"] for n in (1, 2)}
    assert filters == {f"tag:{TAG_CLUSTER}": "conf", f"tag:{TAG_POOL}": "burst"}


def test_listing_normalizes_states_and_extra(cloud: CloudUnderTest) -> None:
    [result] = cloud.provider.launch(cloud.spec, [request("burst-5ta7e5")])
    [node] = cloud.provider.list_nodes(cloud.spec)
    assert node.state == CloudState.PENDING and node.provider_ref == result.provider_ref
    eventually("running", lambda: cloud.provider.list_nodes(cloud.spec)[0].state == CloudState.RUNNING)
    [node] = cloud.provider.list_nodes(cloud.spec)
    assert node.extra["size"] == "t3.medium" and node.extra["image"] == "ami-0123456789abcdef0"
    assert node.extra["ip"] and node.extra["zone"] == "us-east-1a" and node.extra["spot"] is False
    json.dumps(node.extra)  # plain values only
    cloud.provider.terminate(cloud.spec, ["burst-5ta7e5"])
    [node] = cloud.provider.list_nodes(cloud.spec)
    assert node.state == CloudState.STOPPING, "EC2 shutting-down (Libcloud: UNKNOWN) is on its way out"
    eventually("listed as terminated", lambda: [n.state for n in cloud.provider.list_nodes(cloud.spec)]
               == [CloudState.TERMINATED])
    eventually("gone", lambda: cloud.provider.list_nodes(cloud.spec) == [])


def test_client_token_makes_a_blind_retry_idempotent_on_the_server(cloud: CloudUnderTest) -> None:
    """EC2 is eventually consistent: the retry's listing may not show the instance; the token saves us."""
    fake_for(cloud.state).describe_lag_s = 60.0
    cloud.state.inject("create", Fault.TIMEOUT)
    [first] = cloud.provider.launch(cloud.spec, [request("burst-70ken0")])
    assert first.error_kind == LaunchErrorKind.TRANSIENT
    [again] = cloud.provider.launch(cloud.spec, [request("burst-70ken0")])
    assert again.ok and again.provider_ref == cloud.state.by_name("burst-70ken0").ref
    runs = calls(cloud, "RunInstances")
    assert len(runs) == 2 and runs[0]["ClientToken"] == runs[1]["ClientToken"]
    assert cloud.state.create_calls == ["burst-70ken0"]


def test_terminate_destroys_only_the_named_nodes_and_tolerates_gone_ones(cloud: CloudUnderTest) -> None:
    results = cloud.provider.launch(cloud.spec, [request("burst-aaaaaa"), request("burst-bbbbbb")])
    assert all(r.ok for r in results)
    cloud.provider.terminate(cloud.spec, ["burst-aaaaaa", "burst-n0ne00"])
    [terminate] = calls(cloud, "TerminateInstances")
    assert terminate == {**terminate, "InstanceId.1": results[0].provider_ref} and "InstanceId.2" not in terminate
    # Gone between our listing and our destroy: EC2 says InvalidInstanceID.NotFound, which is success.
    fake_for(cloud.state).next_errors["TerminateInstances"] = [
        (400, "InvalidInstanceID.NotFound", f"The instance ID '{results[1].provider_ref}' does not exist", {})]
    cloud.provider.terminate(cloud.spec, ["burst-bbbbbb"])
    cloud.provider.terminate(cloud.spec, [])
    assert len(calls(cloud, "TerminateInstances")) == 2


def test_an_existing_vm_is_returned_not_created_again(cloud: CloudUnderTest) -> None:
    [first] = cloud.provider.launch(cloud.spec, [request("burst-1d1d1d")])
    [second] = cloud.provider.launch(cloud.spec, [request("burst-1d1d1d")])
    assert second.ok and second.provider_ref == first.provider_ref
    assert len(calls(cloud, "RunInstances")) == 1


# -- EC2 errors ----------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "code", "kind"), [
    (400, "VcpuLimitExceeded", LaunchErrorKind.QUOTA),
    (400, "InstanceLimitExceeded", LaunchErrorKind.QUOTA),
    (500, "InsufficientInstanceCapacity", LaunchErrorKind.CAPACITY),
    (403, "UnauthorizedOperation", LaunchErrorKind.AUTH),
    (401, "AuthFailure", LaunchErrorKind.AUTH),
    (400, "InvalidParameterValue", LaunchErrorKind.CONFIG),
    (400, "InvalidSubnetID.NotFound", LaunchErrorKind.CONFIG),
    (400, "IdempotentParameterMismatch", LaunchErrorKind.CONFIG),
    (503, "Unavailable", LaunchErrorKind.TRANSIENT),
    (500, "InternalError", LaunchErrorKind.TRANSIENT),
    (503, "RequestLimitExceeded", LaunchErrorKind.THROTTLED),
])
def test_ec2_error_codes_map_to_launch_error_kinds(cloud: CloudUnderTest, status: int, code: str,
                                                   kind: LaunchErrorKind, caplog: pytest.LogCaptureFixture) -> None:
    fake_for(cloud.state).next_errors["RunInstances"] = [(status, code, f"{code} happened", {})]
    with caplog.at_level(logging.WARNING, logger="providers.libcloud"):
        [result] = cloud.provider.launch(cloud.spec, [request("burst-e7707e")])
    assert not result.ok and result.error_kind == kind, result
    assert code in result.error
    if kind == LaunchErrorKind.THROTTLED:
        assert result.retry_after_s == DEFAULT_THROTTLE_S, "EC2 sends no Retry-After: a default delay applies"
    else:
        assert result.retry_after_s is None
    [line] = [r.getMessage() for r in caplog.records if "launch failed" in r.getMessage()]
    assert "pool=burst" in line and "node=burst-e7707e" in line


def test_a_wrong_secret_is_an_auth_error_and_never_leaks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with start(tmp_path) as cloud:
        wrong = "wrong-secret-" + uuid.uuid4().hex
        with patched_env({SECRET_ENV: wrong}), caplog.at_level(logging.DEBUG):
            [result] = cloud.provider.launch(cloud.spec, [request("burst-5ec12e")])
            with pytest.raises(Exception) as raised:
                cloud.provider.list_nodes(cloud.spec)
        assert result.error_kind == LaunchErrorKind.AUTH and "SignatureDoesNotMatch" in result.error
        assert getattr(raised.value, "kind", None) == LaunchErrorKind.AUTH
        for secret in (wrong, cloud.env[SECRET_ENV]):
            assert secret not in caplog.text and secret not in result.error and secret not in str(raised.value)
            assert secret not in repr(cloud.provider) and secret not in repr(raised.value)


def test_no_secret_in_logs_errors_repr_or_extra(cloud: CloudUnderTest, caplog: pytest.LogCaptureFixture) -> None:
    secret = cloud.env[SECRET_ENV]
    with caplog.at_level(logging.DEBUG):
        for fault in Fault:
            cloud.state.inject("create", fault)
            [result] = cloud.provider.launch(cloud.spec, [request(f"burst-{fault.value[:6]}")])
            assert not result.ok and secret not in (result.error or "")
        nodes = cloud.provider.list_nodes(cloud.spec)
        cloud.state.inject("list", Fault.TIMEOUT)
        with pytest.raises(Exception) as raised:
            cloud.provider.list_nodes(cloud.spec)
    assert secret not in caplog.text and secret not in str(raised.value)
    assert "Signature=" not in caplog.text and "Signature=" not in str(raised.value)
    assert secret not in repr(cloud.provider) and secret not in repr(nodes)
    assert secret not in json.dumps(cloud.settings)


def test_a_missing_secret_variable_is_named(cloud: CloudUnderTest) -> None:
    with patched_env({SECRET_ENV: ""}):
        [result] = cloud.provider.launch(cloud.spec, [request("burst-0e0v00")])
        with pytest.raises(Exception, match=SECRET_ENV):
            cloud.provider.list_nodes(cloud.spec)
    assert result.error_kind == LaunchErrorKind.AUTH and SECRET_ENV in result.error
    assert cloud.state.requests == []


# -- transport: retries, timeouts, TLS, signature version ----------------------------------
def test_transient_errors_are_retried_up_to_max_retries(tmp_path: Path) -> None:
    with start(tmp_path, max_retries=1) as cloud:
        cloud.state.inject("list", Fault.SERVER_ERROR)
        assert cloud.provider.list_nodes(cloud.spec) == []
        cloud.state.inject("list", Fault.SERVER_ERROR, times=2)
        with pytest.raises(Exception, match="InternalError"):
            cloud.provider.list_nodes(cloud.spec)
        assert [p for _, p in cloud.state.requests].count("/?Action=DescribeInstances") == 4
        # A create is retried too, because the ClientToken makes RunInstances idempotent.
        cloud.state.inject("create", Fault.SERVER_ERROR)
        [result] = cloud.provider.launch(cloud.spec, [request("burst-2e7240")])
        assert result.ok and cloud.state.create_calls == ["burst-2e7240"]


def test_throttles_and_timeouts_are_not_retried(tmp_path: Path) -> None:
    with start(tmp_path, max_retries=3) as cloud:
        cloud.state.inject("create", Fault.THROTTLED)
        [throttled] = cloud.provider.launch(cloud.spec, [request("burst-7h2077")])
        assert throttled.error_kind == LaunchErrorKind.THROTTLED
        assert throttled.retry_after_s == cloud.state.retry_after_s, "Retry-After is honoured when present"
        cloud.state.inject("create", Fault.TIMEOUT)
        [timed_out] = cloud.provider.launch(cloud.spec, [request("burst-71me00")])
        assert timed_out.error_kind == LaunchErrorKind.TRANSIENT and "timed out" in timed_out.error
        assert [p for _, p in cloud.state.requests].count("/?Action=RunInstances") == 2


def test_tls_with_a_pinned_ca_bundle(tmp_path: Path) -> None:
    import libcloud.security

    before = libcloud.security.CA_CERTS_PATH
    with start(tmp_path, tls=True) as cloud:
        assert cloud.settings["driver_args"]["secure"] is True and cloud.settings["ca_bundle"]
        [result] = cloud.provider.launch(cloud.spec, [request("burst-71500b")])
        assert result.ok, result
        assert [n.node_id for n in cloud.provider.list_nodes(cloud.spec)] == ["burst-71500b"]
        untrusted = PoolSpec(name="burst", cluster="conf", slots=2, settings={**cloud.settings, "ca_bundle": None})
        [refused] = cloud.provider.launch(untrusted, [request("burst-n07ru5")])
        assert refused.error_kind == LaunchErrorKind.CONFIG and "ca_bundle" in refused.error
    assert libcloud.security.CA_CERTS_PATH == before, "the CA is pinned per connection, not process-wide"


def test_ec2_signs_with_sigv4_unless_told_otherwise(tmp_path: Path) -> None:
    """SigV4 keeps the signature out of the URL (which urllib3 logs at DEBUG); SigV2 stays available."""
    with start(tmp_path) as cloud:
        [result] = cloud.provider.launch(cloud.spec, [request("burst-519440")])
        assert result.ok, result
        assert "Signature" not in calls(cloud, "RunInstances")[0] and "SignatureVersion" not in calls(cloud, "RunInstances")[0]
        args = {**cloud.settings["driver_args"], "signature_version": "2"}
        spec = PoolSpec(name="burst", cluster="conf", slots=2, settings={**cloud.settings, "driver_args": args})
        assert [n.node_id for n in cloud.provider.list_nodes(spec)] == ["burst-519440"]
        assert calls(cloud, "DescribeInstances")[-1]["SignatureVersion"] == "2"


def test_a_manager_process_reaches_the_fake_with_the_published_env(cloud: CloudUnderTest) -> None:
    [result] = cloud.provider.launch(cloud.spec, [request("burst-9a9a9a")])
    assert result.ok
    script = textwrap.dedent(f"""
        import json
        from providers import make_provider
        from providers.base import PoolSpec
        spec = PoolSpec(name="burst", cluster="conf", slots=2, settings=json.loads({json.dumps(json.dumps(cloud.settings))}))
        provider = make_provider("libcloud", state_dir=".", cluster="conf")
        print(json.dumps([n.node_id for n in provider.list_nodes(spec)]))
    """)
    env = {k: v for k, v in os.environ.items() if k != SECRET_ENV} | cloud.env | {"PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == ["burst-9a9a9a"]


# -- settings --------------------------------------------------------------------------------
def base_settings(**overrides: Any) -> dict[str, Any]:
    return {"driver": "ec2", "key": ACCESS_KEY, "secret_env": SECRET_ENV, "size": "m5.large", "image": "ami-1",
            "driver_args": {"region": "eu-west-1"}, **overrides}


def test_settings_defaults() -> None:
    settings = Settings.model_validate(base_settings(driver="EC2"))
    assert settings.driver == "ec2" and settings.request_timeout_s == 30 and settings.max_retries == 2
    assert settings.ca_bundle is None and settings.match_by_name is False
    assert all(field.description for field in Settings.model_fields.values())


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"driver": "nosuchcloud"}, "driver", "unknown libcloud compute driver"),
    ({"driver_args": {"password": "hunter2"}}, "driver_args", "looks like a secret"),
    ({"driver_args": {"ex_force_auth_token": "t"}}, "driver_args", "secret_args_env"),
    ({"driver_args": {"timeout": 3}}, "driver_args", "set by hybrid-rm"),
    ({"create_args": {"ex_userdata": "x"}}, "create_args", "set by hybrid-rm"),
    ({"create_args": {"ex_admin_pass": "x"}}, "create_args", "looks like a secret"),
    ({"secret_env": "not a name"}, "secret_env", "pattern"),
    ({"secret_args_env": {"ex_force_auth_token": "1BAD"}}, "secret_args_env", "not an environment variable"),
    ({"ca_bundle": "/nonexistent/ca.pem"}, "ca_bundle", "is not a file"),
    ({"request_timeout_s": 0}, "request_timeout_s", "greater than 0"),
    ({"max_retries": -1}, "max_retries", "greater than or equal to 0"),
    ({"secret": "inline"}, "secret", "Extra inputs are not permitted"),
])
def test_settings_errors_name_the_field(overrides: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Settings.model_validate(base_settings(**overrides))
    [error] = raised.value.errors()
    assert error["loc"][0] == field and words in error["msg"], error


def test_invalid_settings_fail_the_launch_as_config(tmp_path: Path) -> None:
    provider = PROVIDER(state_dir=tmp_path, cluster="conf")
    spec = PoolSpec(name="burst", cluster="conf", slots=1, settings=base_settings(size=""))
    [result] = provider.launch(spec, [request("burst-c0nf19")])
    assert result.error_kind == LaunchErrorKind.CONFIG and "size" in result.error


def test_unknown_create_args_are_refused_before_any_call(cloud: CloudUnderTest) -> None:
    spec = PoolSpec(name="burst", cluster="conf", slots=2,
                    settings={**cloud.settings, "create_args": {"ex_no_such_arg": 1}})
    [result] = cloud.provider.launch(spec, [request("burst-a2a2a2")])
    assert result.error_kind == LaunchErrorKind.CONFIG and "create_args.ex_no_such_arg" in result.error
    assert cloud.state.requests == []


def test_a_driver_that_cannot_tag_is_refused_unless_matched_by_name(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Scaleway's create_node takes only a list of string tags: our pool cannot be told apart by them."""
    provider = PROVIDER(state_dir=tmp_path, cluster="conf")
    settings = {"driver": "scaleway", "key": "access", "secret_env": SECRET_ENV, "size": "DEV1-S", "image": "img"}
    with patched_env({SECRET_ENV: "scw-secret"}):
        [result] = provider.launch(PoolSpec("burst", "conf", 1, settings=settings), [request("burst-5ca1e0")])
        assert result.error_kind == LaunchErrorKind.CONFIG and "match_by_name" in result.error
        by_name = PoolSpec("burst", "conf", 1, settings={**settings, "match_by_name": True})
        with caplog.at_level(logging.WARNING, logger="providers.libcloud"):
            provider._client(by_name)  # builds the driver (no API call) and warns once
            provider._client(by_name)
    assert sum("name prefix 'burst-'" in r.getMessage() for r in caplog.records) == 1


# -- lazy import -----------------------------------------------------------------------------
def run_python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO_ROOT, capture_output=True,
                          text=True)


def test_importing_the_module_does_not_import_libcloud() -> None:
    out = run_python("""
        import sys
        import providers.libcloud
        assert providers.libcloud.PROVIDER.name == "libcloud"
        print(sorted(m for m in sys.modules if m.split(".")[0] in ("libcloud", "requests")))
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_without_libcloud_the_error_says_how_to_install_it() -> None:
    out = run_python("""
        import sys
        sys.modules["libcloud"] = None  # as if not installed: any import of it fails
        from agents.settings import AgentSettings
        from providers.base import LaunchRequest, PoolSpec
        from providers.libcloud import PROVIDER, Settings
        settings = {"driver": "anything", "key": "k", "size": "s", "image": "i"}
        Settings.model_validate(settings)  # the driver name is checked at first use instead
        agent = AgentSettings(node_id="burst-1", pool="burst", cluster="c", broker_url="redis://x", queues=("q",))
        [result] = PROVIDER(".", "c").launch(PoolSpec("burst", "c", 1, settings=settings),
                                             [LaunchRequest("burst-1", agent, "")])
        print(result.error_kind.value, result.error)
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("config ") and INSTALL_HINT in out.stdout


# -- the generic path: Libcloud's OpenStack driver against a small Nova + Keystone fake --------
class MiniNova:
    """Keystone v3 password auth and Nova's servers API, as Libcloud's OpenStack 1.1 driver uses them."""

    def __init__(self, password: str) -> None:
        self.password = password
        self.token = uuid.uuid4().hex
        self.servers: dict[str, dict[str, Any]] = {}
        self.requests: list[tuple[str, str]] = []
        self.next_create_error: tuple[int, dict] | None = None
        self.base_url = ""
        self.lock = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        method, path = environ["REQUEST_METHOD"], environ["PATH_INFO"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(length) or b"null") if length else None
        self.requests.append((method, path))
        status, payload, headers = self.route(method, path, body, environ)
        data = b"" if payload is None else json.dumps(payload).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))] + headers)
        return [data]

    def route(self, method: str, path: str, body: Any, environ: dict) -> tuple[str, Any, list]:
        unauthorized = ("401 Unauthorized", {"error": {"code": 401, "title": "Unauthorized",
                                                       "message": "The request you have made requires authentication."}}, [])
        if (method, path) == ("POST", "/v3/auth/tokens"):
            password = body["auth"]["identity"]["password"]["user"]
            if password["name"] != "demo" or password["password"] != self.password:
                return unauthorized
            catalog = [{"type": "compute", "name": "nova", "endpoints": [
                {"region": "RegionOne", "interface": "public", "url": f"{self.base_url}/compute/v2.1/p1"}]}]
            token = {"expires_at": "2999-01-01T00:00:00.000000Z", "catalog": catalog, "roles": [],
                     "user": {"id": "u1", "name": "demo"}, "project": {"id": "p1", "name": "demo"}}
            return "201 Created", {"token": token}, [("X-Subject-Token", self.token)]
        if environ.get("HTTP_X_AUTH_TOKEN") != self.token:
            return unauthorized
        prefix = "/compute/v2.1/p1/servers"
        with self.lock:
            if (method, path) == ("GET", prefix + "/detail"):
                return "200 OK", {"servers": [self.view(s) for s in self.servers.values()]}, []
            if (method, path) == ("POST", prefix):
                if self.next_create_error is not None:
                    (code, fault), self.next_create_error = self.next_create_error, None
                    return f"{code} Error", fault, []
                server = body["server"]
                sid = str(uuid.uuid4())
                self.servers[sid] = {"id": sid, "name": server["name"], "status": "BUILD",
                                     "metadata": server.get("metadata", {}), "image": {"id": server["imageRef"]},
                                     "flavor": {"id": server["flavorRef"]}, "user_data": server.get("user_data")}
                return "202 Accepted", {"server": {"id": sid, "adminPass": "s3cr3t-admin-pass",
                                                   "links": [{"rel": "self", "href": f"{self.base_url}{prefix}/{sid}"}]}}, []
            sid = path.rsplit("/", 1)[-1]
            if path == f"{prefix}/{sid}" and sid in self.servers:
                if method == "GET":
                    return "200 OK", {"server": self.view(self.servers[sid])}, []
                if method == "DELETE":
                    del self.servers[sid]
                    return "204 No Content", None, []
            return "404 Not Found", {"itemNotFound": {"code": 404, "message": f"Instance {sid} could not be found."}}, []

    def view(self, server: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in server.items() if k != "user_data"}, "addresses": {}, "hostId": "h",
                "tenant_id": "p1", "user_id": "u1", "created": "2024-01-01T00:00:00Z", "updated": "2024-01-01T00:00:00Z",
                "links": [{"rel": "self", "href": f"{self.base_url}/compute/v2.1/p1/servers/{server['id']}"}]}


@contextmanager
def openstack_pool(tmp_path: Path) -> Iterator[tuple[MiniNova, PoolSpec, Any]]:
    nova = MiniNova(password="os-" + uuid.uuid4().hex)
    with serve(nova) as served, patched_env({"OS_PASSWORD": nova.password}):
        nova.base_url = served.base_url
        settings = {"driver": "openstack", "key": "demo", "secret_env": "OS_PASSWORD", "size": "flavor-2",
                    "image": "image-uuid-1", "request_timeout_s": 1.5, "max_retries": 0,
                    "driver_args": {"ex_force_auth_url": served.base_url, "ex_force_auth_version": "3.x_password",
                                    "ex_tenant_name": "demo", "ex_domain_name": "Default"}}
        provider = PROVIDER(state_dir=tmp_path, cluster="conf")
        try:
            yield nova, PoolSpec(name="burst", cluster="conf", slots=2, settings=settings), provider
        finally:
            provider.close()


def test_generic_driver_tags_with_metadata_and_filters_on_the_client(tmp_path: Path) -> None:
    with openstack_pool(tmp_path) as (nova, spec, provider):
        nova.servers["foreign"] = {"id": "foreign", "name": "burst-0ther1", "status": "ACTIVE", "image": {"id": "i"},
                                   "flavor": {"id": "f"}, "metadata": {TAG_CLUSTER: "other", TAG_POOL: "burst",
                                                                       TAG_NODE: "burst-0ther1"}}
        nova.servers["web"] = {"id": "web", "name": "web-1", "status": "ACTIVE", "image": {"id": "i"},
                               "flavor": {"id": "f"}, "metadata": {}}
        results = provider.launch(spec, [request("burst-05a001"), request("burst-05a002", user_data="")])
        assert [r.ok for r in results] == [True, True], results
        created = {s["name"]: s for s in nova.servers.values() if s["id"] not in ("foreign", "web")}
        assert created["burst-05a001"]["metadata"] == {TAG_CLUSTER: "conf", TAG_POOL: "burst", TAG_NODE: "burst-05a001"}
        assert base64.b64decode(created["burst-05a001"]["user_data"]).decode() == request("x").user_data
        assert created["burst-05a001"]["flavor"] == {"id": "flavor-2"}
        assert created["burst-05a002"]["user_data"] is None
        nodes = {n.node_id: n for n in provider.list_nodes(spec)}
        assert set(nodes) == {"burst-05a001", "burst-05a002"} and nodes["burst-05a001"].state == CloudState.PENDING
        assert "adminPass" not in json.dumps([n.extra for n in nodes.values()])
        assert "s3cr3t-admin-pass" not in repr(nodes)
        created["burst-05a001"]["status"], created["burst-05a002"]["status"] = "ACTIVE", "ERROR"
        states = {n.node_id: n.state for n in provider.list_nodes(spec)}
        assert states == {"burst-05a001": CloudState.RUNNING, "burst-05a002": CloudState.FAILED}
        [again] = provider.launch(spec, [request("burst-05a001")])
        assert again.ok and again.provider_ref == results[0].provider_ref
        [failed] = provider.launch(spec, [request("burst-05a002")])
        assert failed.error_kind == LaunchErrorKind.CAPACITY, "a VM the cloud failed to build is not a success"
        assert [m for m, p in nova.requests if p.endswith("/servers")].count("POST") == 2
        provider.terminate(spec, ["burst-05a001", "burst-05a002", "burst-0ther1", "web-1"])
        assert set(nova.servers) == {"foreign", "web"}
        assert [p for m, p in nova.requests if m == "POST"].count("/v3/auth/tokens") == 1


def test_generic_driver_errors_are_classified(tmp_path: Path) -> None:
    with openstack_pool(tmp_path) as (nova, spec, provider):
        nova.next_create_error = (403, {"forbidden": {"code": 403, "message": "Quota exceeded for instances: "
                                                                              "Requested 1, but already used 10 of 10"}})
        [quota] = provider.launch(spec, [request("burst-90a1a0")])
        assert quota.error_kind == LaunchErrorKind.QUOTA, quota
        nova.next_create_error = (400, {"badRequest": {"code": 400, "message": "Flavor flavor-2 could not be found."}})
        [config] = provider.launch(spec, [request("burst-90a1a0")])
        assert config.error_kind == LaunchErrorKind.CONFIG, config
        with patched_env({"OS_PASSWORD": "wrong"}):
            fresh = PROVIDER(state_dir=tmp_path, cluster="conf")
            [auth] = fresh.launch(spec, [request("burst-90a1a0")])
        assert auth.error_kind == LaunchErrorKind.AUTH, auth
        assert nova.password not in (quota.error or "") + (config.error or "") + (auth.error or "")
