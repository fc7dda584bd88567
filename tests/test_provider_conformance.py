"""One conformance suite, run against every cloud provider through its real SDK and a stateful fake.

Why one suite (libcloud's ``TestCaseMixin`` idea): the controller relies on the same contract
from every driver: launch is idempotent per node id, listing returns only our VMs, terminate
tolerates a VM already gone, and every failure comes back as the same error class whatever the
cloud calls it. Each fake (``tests/fakes/<cloud>.py``) serves its cloud's HTTP API on loopback
and the SDK talks real HTTP to it, so serialization, auth and operation polling all run.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agents.settings import AgentSettings
from providers.base import TAG_CLUSTER, TAG_NODE, TAG_POOL, CloudNode, CloudState, LaunchErrorKind, LaunchRequest
from providers.bootstrap import BootstrapConfig, Enrolment, render_user_data
from tests.fakes.common import EXPECTED_KIND, CloudUnderTest, Fault

FAKES = {"azure": "tests.fakes.azure", "openstack": "tests.fakes.openstack", "libcloud": "tests.fakes.ec2"}


@pytest.fixture(params=sorted(FAKES))
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CloudUnderTest]:
    start = importlib.import_module(FAKES[request.param]).start
    with start(tmp_path) as under_test:
        assert under_test.name == request.param
        yield under_test


def launch_request(cloud: CloudUnderTest, node_id: str) -> LaunchRequest:
    spec = cloud.spec
    agent = AgentSettings(node_id=node_id, pool=spec.name, cluster=spec.cluster, broker_url="redis://unused",
                          queues=(f"rm.{spec.cluster}",), slots=spec.slots)
    user_data = render_user_data(BootstrapConfig(), Enrolment("http://127.0.0.1:1", node_id, "t" * 43))
    return LaunchRequest(node_id, agent, user_data)


def listed(cloud: CloudUnderTest) -> dict[str, CloudNode]:
    return {node.node_id: node for node in cloud.provider.list_nodes(cloud.spec)
            if node.state != CloudState.TERMINATED}


def eventually(what: str, predicate: Callable[[], object], timeout_s: float = 60.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_launch_lists_ours_runs_and_terminates(cloud: CloudUnderTest) -> None:
    requests = [launch_request(cloud, "burst-c0ffee"), launch_request(cloud, "burst-beef01")]
    results = cloud.provider.launch(cloud.spec, requests)
    assert [(r.node_id, r.ok) for r in results] == [("burst-c0ffee", True), ("burst-beef01", True)], results
    assert all(r.provider_ref for r in results)
    nodes = listed(cloud)
    assert set(nodes) == {"burst-c0ffee", "burst-beef01"}
    assert {n.state for n in nodes.values()} <= {CloudState.PENDING, CloudState.RUNNING}
    assert {nodes[r.node_id].provider_ref for r in results} == {r.provider_ref for r in results}
    eventually("both VMs running", lambda: {n.state for n in listed(cloud).values()} == {CloudState.RUNNING})
    for request in requests:
        vm = cloud.state.by_name(request.node_id)
        assert vm is not None and vm.user_data == request.user_data, "the cloud-init must arrive byte for byte"
        assert {TAG_CLUSTER: "conf", TAG_POOL: "burst", TAG_NODE: request.node_id}.items() <= vm.tags.items()

    cloud.provider.terminate(cloud.spec, ["burst-c0ffee"])
    eventually("the terminated VM to leave the listing", lambda: set(listed(cloud)) == {"burst-beef01"})
    assert "burst-c0ffee" not in cloud.state.names()
    cloud.provider.terminate(cloud.spec, ["burst-beef01", "burst-never1"])  # one never existed: not an error
    eventually("every VM gone", lambda: not listed(cloud))
    assert cloud.state.create_calls == ["burst-c0ffee", "burst-beef01"]


def test_listing_returns_only_this_cluster_and_pool(cloud: CloudUnderTest) -> None:
    cloud.add_foreign_vm("web-1", {})
    cloud.add_foreign_vm("burst-0ther1", {TAG_CLUSTER: "other", TAG_POOL: "burst", TAG_NODE: "burst-0ther1"})
    cloud.add_foreign_vm("onprem-abc123", {TAG_CLUSTER: "conf", TAG_POOL: "onprem", TAG_NODE: "onprem-abc123"})
    [result] = cloud.provider.launch(cloud.spec, [launch_request(cloud, "burst-a1b2c3")])
    assert result.ok, result
    assert set(listed(cloud)) == {"burst-a1b2c3"}
    cloud.provider.terminate(cloud.spec, ["burst-0ther1", "web-1"])  # not ours: never touched
    assert {"web-1", "burst-0ther1", "onprem-abc123"} <= cloud.state.names()


def test_a_launch_retried_after_a_timeout_creates_one_vm(cloud: CloudUnderTest) -> None:
    cloud.state.inject("create", Fault.TIMEOUT)
    [first] = cloud.provider.launch(cloud.spec, [launch_request(cloud, "burst-71me0u")])
    assert not first.ok and first.error_kind == LaunchErrorKind.TRANSIENT, first
    [again] = cloud.provider.launch(cloud.spec, [launch_request(cloud, "burst-71me0u")])
    assert again.ok, again
    assert cloud.state.create_calls.count("burst-71me0u") == 1, cloud.state.create_calls
    assert list(listed(cloud)) == ["burst-71me0u"]


@pytest.mark.parametrize("fault", [f for f in Fault if f is not Fault.TIMEOUT])
def test_each_launch_failure_comes_back_classified(cloud: CloudUnderTest, fault: Fault) -> None:
    cloud.state.inject("create", fault)
    [result] = cloud.provider.launch(cloud.spec, [launch_request(cloud, "burst-fa17ed")])
    assert not result.ok
    assert result.error_kind == EXPECTED_KIND[fault], result
    assert result.error, "a failure must say what went wrong"
    if fault is Fault.THROTTLED:
        assert result.retry_after_s == pytest.approx(cloud.state.retry_after_s)
    for secret in cloud.env.values():
        if len(secret) >= 8:
            assert secret not in result.error
    cloud.provider.terminate(cloud.spec, ["burst-fa17ed"])  # what the manager does after any failed launch
    eventually("no VM left of the failed launch", lambda: "burst-fa17ed" not in cloud.state.names())
    [after] = cloud.provider.launch(cloud.spec, [launch_request(cloud, "burst-a77e12")])
    assert after.ok, f"the provider did not recover after {fault}: {after}"


@pytest.mark.parametrize("op", ["list", "delete"])
def test_a_failed_listing_or_destroy_raises_for_the_actuator_to_retry(cloud: CloudUnderTest, op: str) -> None:
    [result] = cloud.provider.launch(cloud.spec, [launch_request(cloud, "burst-0e0e0e")])
    assert result.ok, result
    cloud.state.inject(op, Fault.SERVER_ERROR)
    with pytest.raises(Exception):
        if op == "list":
            cloud.provider.list_nodes(cloud.spec)
        else:
            cloud.provider.terminate(cloud.spec, ["burst-0e0e0e"])
    assert "burst-0e0e0e" in listed(cloud)
    cloud.provider.terminate(cloud.spec, ["burst-0e0e0e"])
    eventually("the VM gone once the cloud answers again", lambda: not listed(cloud))


def test_user_data_over_the_limit_is_refused_before_any_call(cloud: CloudUnderTest) -> None:
    limit = cloud.provider.user_data_limit
    assert limit is not None and 0 < limit <= 64 * 1024
    request = launch_request(cloud, "burst-b16b16")
    oversized = LaunchRequest(request.node_id, request.agent, "#cloud-config\n#" + "x" * limit + "\n")
    calls_before = len(cloud.state.requests)
    [result] = cloud.provider.launch(cloud.spec, [oversized])
    assert not result.ok and result.error_kind == LaunchErrorKind.CONFIG, result
    assert "limit" in result.error or "large" in result.error
    assert cloud.state.create_calls == [] and len(cloud.state.requests) == calls_before
