"""What every cloud fake shares: its VMs, the calls it saw, and the faults a test injects.

Why one shape for all fakes: the provider conformance suite (``tests/test_provider_conformance.py``)
runs the same checks against Azure, OpenStack and Libcloud, so it needs to read each fake's
state and inject each fault class the same way. A fake is a WSGI app (served by
``tests.fakes.server``) that keeps a :class:`FakeCloudState`; the SDK under test talks real HTTP
to it, so serialization, auth and long-running-operation polling all run.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from providers.base import LaunchErrorKind, PoolSpec, Provider


class Fault(StrEnum):
    """Faults a test can inject into the next calls of one operation."""

    QUOTA = "quota"  # quota exceeded: Azure 409 OperationNotAllowed, OpenStack 403 quota, EC2 InstanceLimitExceeded
    CAPACITY = "capacity"  # the cloud has no room: Azure 409 SkuNotAvailable/AllocationFailed, OpenStack build ERROR
    THROTTLED = "throttled"  # 429 with Retry-After
    SERVER_ERROR = "server-error"  # 500
    TIMEOUT = "timeout"  # the fake sleeps past the client's read timeout before answering
    AUTH = "auth"  # 401 / bad credentials
    BAD_CONFIG = "bad-config"  # unknown image / flavor / size: 400 or 404


#: Operations faults attach to.
OPS = ("create", "list", "delete")


@dataclass
class FakeVm:
    """A VM as the fake cloud holds it; ``name`` is our node id."""

    ref: str  # the cloud's own id
    name: str
    tags: dict[str, str]
    user_data: str  # decoded cloud-init text
    size: str = ""
    image: str = ""
    state: str = "building"  # building | running | deleting | error
    created_at: float = field(default_factory=time.time)
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class VmHooks:
    """Called when a VM finishes building and when it is deleted (a test may run an agent)."""

    on_running: Callable[[FakeVm], None] | None = None
    on_deleted: Callable[[FakeVm], None] | None = None


class FakeCloudState:
    """VMs by cloud id, every create/delete call by VM name, and pending faults. Thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.vms: dict[str, FakeVm] = {}
        self.deleted: dict[str, FakeVm] = {}
        self.create_calls: list[str] = []  # VM names, one entry per create request that created a VM
        self.delete_calls: list[str] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for the API-call notes
        self.hooks = VmHooks()
        self.timeout_sleep_s = 3.0  # how long a TIMEOUT fault stalls (tests set the client timeout below it)
        self.retry_after_s = 7  # what a THROTTLED fault answers in Retry-After
        self.build_delay_s = 0.3  # a created VM turns running this long after the create call
        self.create_delay_s = 0.0  # a create call answers only after this long (a slow cloud)
        self._faults: dict[str, list[Fault]] = {op: [] for op in OPS}
        self._every = 0  # every n-th call of each operation fails (0: none); see inject_every
        self._every_faults: tuple[Fault, ...] = ()
        self._calls: dict[str, int] = {op: 0 for op in OPS}
        self.faulted: list[tuple[str, Fault]] = []  # (operation, fault) of every fault inject_every made

    # -- faults --------------------------------------------------------------------------
    def inject(self, op: str, fault: Fault, times: int = 1) -> None:
        assert op in OPS, op
        with self.lock:
            self._faults[op].extend([fault] * times)

    def inject_every(self, n: int, fault: Fault | Sequence[Fault]) -> None:
        """From now on, fail the first call of each operation (create, list, delete) and every
        ``n``-th after it until :meth:`stop_faults`; several faults are taken in turn. Counting per
        operation keeps the pattern the same however the calls of different operations interleave,
        and starting with a fault means an operation called at all is faulted at least once."""
        assert n >= 1, n
        with self.lock:
            self._every = n
            self._every_faults = (fault,) if isinstance(fault, Fault) else tuple(fault)
            self._calls = {op: 0 for op in OPS}

    def stop_faults(self) -> None:
        """No more faults: neither the periodic ones nor those still queued by :meth:`inject`."""
        with self.lock:
            self._every = 0
            self._faults = {op: [] for op in OPS}

    def take_fault(self, op: str) -> Fault | None:
        with self.lock:
            if self._faults[op]:
                return self._faults[op].pop(0)
            if not self._every:
                return None
            self._calls[op] += 1
            if (self._calls[op] - 1) % self._every:
                return None
            fault = self._every_faults[len(self.faulted) % len(self._every_faults)]
            self.faulted.append((op, fault))
            return fault

    # -- VMs -----------------------------------------------------------------------------
    def add(self, vm: FakeVm) -> FakeVm:
        with self.lock:
            self.vms[vm.ref] = vm
            self.create_calls.append(vm.name)
        return vm

    def by_name(self, name: str) -> FakeVm | None:
        with self.lock:
            return next((vm for vm in self.vms.values() if vm.name == name), None)

    def set_running(self, vm: FakeVm) -> None:
        with self.lock:
            if vm.state != "building":
                return
            vm.state = "running"
        if self.hooks.on_running is not None:
            self.hooks.on_running(vm)

    def schedule_running(self, vm: FakeVm) -> None:
        """Turn ``vm`` running after ``build_delay_s``, whether or not anyone polls it."""
        timer = threading.Timer(self.build_delay_s, self.set_running, args=(vm,))
        timer.daemon = True
        timer.start()

    def fail_build(self, vm: FakeVm, reason: str) -> None:
        """The cloud gave up building ``vm`` (no valid host, allocation failed)."""
        with self.lock:
            vm.state = "error"
            vm.extra["fault"] = reason

    def remove(self, ref: str) -> FakeVm | None:
        with self.lock:
            vm = self.vms.pop(ref, None)
            if vm is not None:
                vm.state = "deleted"
                self.deleted[ref] = vm
                self.delete_calls.append(vm.name)
        if vm is not None and self.hooks.on_deleted is not None:
            self.hooks.on_deleted(vm)
        return vm

    def names(self) -> set[str]:
        """Names of the VMs that exist now (any state but deleted)."""
        with self.lock:
            return {vm.name for vm in self.vms.values()}

    def log_request(self, method: str, path: str) -> None:
        with self.lock:
            self.requests.append((method, path))


#: What each injected fault on ``create`` must come back as, for every provider.
EXPECTED_KIND = {
    Fault.QUOTA: LaunchErrorKind.QUOTA,
    Fault.CAPACITY: LaunchErrorKind.CAPACITY,
    Fault.THROTTLED: LaunchErrorKind.THROTTLED,
    Fault.SERVER_ERROR: LaunchErrorKind.TRANSIENT,
    Fault.TIMEOUT: LaunchErrorKind.TRANSIENT,
    Fault.AUTH: LaunchErrorKind.AUTH,
    Fault.BAD_CONFIG: LaunchErrorKind.CONFIG,
}


@dataclass
class CloudUnderTest:
    """A provider wired to a running fake: what the conformance suite and the e2e tests need.

    ``settings`` is the pool's ``settings:`` block exactly as an admin would write it in YAML
    (pointing at the fake); ``env`` holds what the manager's environment must carry for it
    (credentials, CA bundle); ``spec`` is the PoolSpec built from them.
    """

    name: str  # provider name: azure | openstack | libcloud
    provider: Provider
    spec: PoolSpec
    state: FakeCloudState
    settings: dict[str, Any]
    env: dict[str, str]
    base_url: str
    app: Any = None  # the fake's WSGI app, for tests that read what it received

    def add_foreign_vm(self, name: str, tags: dict[str, str]) -> FakeVm:
        """A VM someone else owns (other tags or none) that ``list_nodes`` must never return."""
        vm = FakeVm(ref=f"foreign-{name}", name=name, tags=tags, user_data="", state="running")
        with self.state.lock:
            self.state.vms[vm.ref] = vm
        return vm


@contextmanager
def patched_env(env: dict[str, str]) -> Iterator[None]:
    """The manager's environment with a fake's credentials in it (restored after).

    Why here: every fake's ``start`` puts the secret its provider reads from the environment
    (a service principal's, a Keystone password, an EC2 secret key) in place the same way.
    """
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
