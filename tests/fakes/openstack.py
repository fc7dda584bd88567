"""A fake OpenStack (Keystone v3, Nova, Glance, Neutron) on one loopback port, for openstacksdk.

Why these endpoints: they are the ones ``providers.openstack`` makes openstacksdk call, and
the SDK runs unchanged against them: Keystone password / application-credential auth that
returns a token and a service catalog pointing back here, version discovery documents for
each service (compute advertises microversions up to 2.96), Nova's server create / list /
show / delete with the tag and name filters applied server-side, and the flavor, image and
network look-ups of ``find_*``. Error bodies use each service's real shapes
(``{"forbidden": {...}}``, ``{"itemNotFound": ...}``, Keystone's ``{"error": ...}``,
``{"NeutronError": ...}``) so the SDK's error parsing runs as against a real cloud.

This module is the WSGI app and Nova; Keystone, version discovery, Glance and Neutron are in
:mod:`tests.fakes.openstack_services` (their credentials are re-exported here, as tests read
them as ``fake.PASSWORD`` and so on).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from providers.base import PoolSpec
from tests.fakes.common import CloudUnderTest, FakeCloudState, FakeVm, Fault, patched_env
from tests.fakes.openstack_services import (  # noqa: F401 - credentials re-exported for the tests
    APP_CRED_ID,
    APP_CRED_SECRET,
    MAX_MICROVERSION,
    MIN_MICROVERSION,
    PASSWORD,
    PROJECT_ID,
    PROJECT_NAME,
    REGION,
    USERNAME,
    HttpError,
    Image,
    Network,
    OpenStackServices,
    keystone_401,
    now_iso,
)
from tests.fakes.server import serve

PASSWORD_ENV = "HYBRID_RM_TEST_OS_PASSWORD"
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
TAG_MAX_LENGTH = 60
USER_DATA_MAX = 65535


def _mv(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


@dataclass
class Flavor:
    id: str
    name: str
    vcpus: int
    ram: int
    disk: int


def nova_error(status: int, message: str) -> HttpError:
    key = {400: "badRequest", 403: "forbidden", 404: "itemNotFound", 409: "conflictingRequest",
           413: "overLimit", 429: "overLimit"}.get(status, "computeFault")
    return HttpError(status, {key: {"code": status, "message": message}})


@dataclass
class Call:
    """One request as the fake received it (for wire-level assertions)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeOpenStack(OpenStackServices):
    """The WSGI app. ``state`` holds the VMs; the rest is the cloud's static inventory."""

    state: FakeCloudState
    flavors: list[Flavor] = field(default_factory=lambda: [
        Flavor("1", "m1.tiny", 1, 512, 1), Flavor("2", "m1.small", 1, 2048, 20), Flavor("3", "m1.medium", 2, 4096, 40)])
    images: list[Image] = field(default_factory=lambda: [
        Image("6b2f1e52-6f1b-4c4e-9f0a-0d1c2b3a4e5f", "ubuntu-24.04"),
        Image("0a9e8d7c-1b2a-4c3d-8e7f-6a5b4c3d2e1f", "debian-12")])
    networks: list[Network] = field(default_factory=lambda: [
        Network("3f1e2d3c-4b5a-4697-8877-665544332211", "private"),
        Network("9a8b7c6d-5e4f-4a3b-9c2d-1e0f1a2b3c4d", "public")])
    keypairs: set[str] = field(default_factory=lambda: {"ops"})
    security_groups: set[str] = field(default_factory=lambda: {"default", "agents"})
    availability_zones: set[str] = field(default_factory=lambda: {"nova", "az-2"})
    delete_delay_s: float = 0.2  # a deleted server shows task_state "deleting" this long
    calls: list[Call] = field(default_factory=list)
    tokens: set[str] = field(default_factory=set)
    reject_auth: int = 0  # the next N token requests get a 401 (credentials revoked)
    scheme: str = "http"  # what the catalog URLs use (wsgiref cannot tell it is behind TLS)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _ip_counter: int = 10

    # -- WSGI --------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        raw = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        self.state.log_request(method, path)
        with self._lock:
            self.calls.append(Call(method, path, query, headers, body))
        base = f"{self.scheme}://{environ['HTTP_HOST']}"
        try:
            status, payload, extra = self._route(method, path.rstrip("/") or "/", query, headers, body, base)
        except HttpError as error:
            status, payload, extra = error.status, error.body, error.headers
        reason = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 300: "Multiple Choices",
                  400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
                  413: "Request Entity Too Large", 429: "Too Many Requests", 500: "Internal Server Error"}
        data = b"" if payload is None else json.dumps(payload).encode()
        out = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
               ("x-openstack-request-id", f"req-{uuid.uuid4()}")] + list(extra.items())
        start_response(f"{status} {reason.get(status, 'Error')}", out)
        return [data]

    def _route(self, method: str, path: str, query: dict, headers: dict, body: Any, base: str
               ) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        service = parts[0] if parts else ""
        if service == "identity":
            return self._identity(method, parts[1:], body, base)
        if service not in ("compute", "image", "networking"):
            raise HttpError(404, {"message": f"no such service: {path}"})
        if len(parts) <= 2 and method == "GET":
            return self._versions(service, parts[1:], base)
        self._authenticate(headers)
        if service == "compute":
            return self._compute(method, parts[2:], query, headers, body, base)
        if service == "image":
            return self._image(method, parts[2:], query)
        return self._network(method, parts[2:], query)


    # -- faults ------------------------------------------------------------------------------
    def _fault(self, op: str) -> Fault | None:
        """Apply an injected fault the way Nova answers it; TIMEOUT is returned for the caller to stall."""
        fault = self.state.take_fault(op)
        if fault is None or fault == Fault.TIMEOUT or (fault == Fault.CAPACITY and op == "create"):
            return fault  # the caller stalls, or lets the build end in ERROR
        if fault == Fault.QUOTA:
            raise nova_error(403, "Quota exceeded for cores: Requested 2, but already used 20 of 20 cores")
        if fault == Fault.THROTTLED:
            retry = str(self.state.retry_after_s)
            error = nova_error(429, "This request was rate-limited.")
            error.body["overLimit"]["retryAfter"] = retry
            error.headers["Retry-After"] = retry
            raise error
        if fault == Fault.AUTH:
            self._revoke()
            raise keystone_401()
        if fault == Fault.BAD_CONFIG:
            raise nova_error(400, "Invalid imageRef provided.")
        raise nova_error(500, "Unexpected API Error. Please report this at http://bugs.launchpad.net/nova/ "
                              "and attach the Nova API log if possible.\n<class 'nova.exception.NovaException'>")

    # -- Nova --------------------------------------------------------------------------------
    def _microversion(self, headers: dict) -> tuple[int, int]:
        value = headers.get("openstack-api-version", "")
        if value.startswith("compute "):
            value = value.split(" ", 1)[1].strip()
        else:
            value = headers.get("x-openstack-nova-api-version", MIN_MICROVERSION)
        if value == "latest":
            value = MAX_MICROVERSION
        try:
            version = _mv(value)
        except ValueError:
            raise nova_error(400, f"Invalid API version request string {value}") from None
        if not _mv(MIN_MICROVERSION) <= version <= _mv(MAX_MICROVERSION):
            raise HttpError(406, {"computeFault": {"code": 406, "message": f"Version {value} is not supported"}})
        return version

    def _compute(self, method: str, parts: list[str], query: dict, headers: dict, body: Any, base: str
                 ) -> tuple[int, Any, dict[str, str]]:
        mv = self._microversion(headers)
        if parts and parts[0] == "flavors":
            return self._flavors(method, parts[1:], base)
        if parts == ["servers"] and method == "POST":
            return self._create_server(body or {}, mv, base)
        if parts in (["servers"], ["servers", "detail"]) and method == "GET":
            if self._fault("list") == Fault.TIMEOUT:
                time.sleep(self.state.timeout_sleep_s)
            servers = self._filter(query)
            if parts == ["servers"]:
                return 200, {"servers": [{"id": vm.ref, "name": vm.name, "links": self._links(base, vm)}
                                         for vm in servers]}, {}
            return 200, {"servers": [self._render(vm, mv, base) for vm in servers]}, {}
        if len(parts) == 2 and parts[0] == "servers":
            with self.state.lock:
                vm = self.state.vms.get(parts[1])
            if method == "GET":
                if vm is None:
                    raise nova_error(404, f"Instance {parts[1]} could not be found.")
                return 200, {"server": self._render(vm, mv, base)}, {}
            if method == "DELETE":
                return self._delete_server(parts[1], vm)
        raise nova_error(404, "The resource could not be found.")

    def _flavors(self, method: str, parts: list[str], base: str) -> tuple[int, Any, dict[str, str]]:
        def render(flavor: Flavor) -> dict:
            return {"id": flavor.id, "name": flavor.name, "vcpus": flavor.vcpus, "ram": flavor.ram,
                    "disk": flavor.disk, "OS-FLV-EXT-DATA:ephemeral": 0, "swap": 0, "rxtx_factor": 1.0,
                    "OS-FLV-DISABLED:disabled": False, "os-flavor-access:is_public": True,
                    "links": [{"rel": "self", "href": f"{base}/compute/v2.1/flavors/{flavor.id}"}]}

        if method == "GET" and parts in ([], ["detail"]):
            return 200, {"flavors": [render(f) for f in self.flavors]}, {}
        if method == "GET" and len(parts) == 1:
            for flavor in self.flavors:
                if flavor.id == parts[0]:
                    return 200, {"flavor": render(flavor)}, {}
            raise nova_error(404, f"Flavor {parts[0]} could not be found.")
        raise nova_error(404, "The resource could not be found.")

    def _validate_create(self, server: dict, mv: tuple[int, int]) -> dict[str, Any]:
        """Nova's create schema and look-ups, reduced to what a bad setting would trip."""
        if not isinstance(server, dict) or not server.get("name"):
            raise nova_error(400, "Invalid input for field/attribute server. 'name' is a required property")
        allowed = {"name", "flavorRef", "imageRef", "networks", "metadata", "user_data", "key_name",
                   "security_groups", "availability_zone", "config_drive", "description", "tags"}
        unexpected = sorted(set(server) - allowed)
        if "tags" in server and mv < (2, 52):
            unexpected.append("tags")
        if unexpected:
            raise nova_error(400, f"Invalid input for field/attribute server. Value: {server}. "
                                  f"Additional properties are not allowed ({unexpected[0]!r} was unexpected)")
        flavor = next((f for f in self.flavors if f.id == server.get("flavorRef")), None)
        if flavor is None:
            raise nova_error(400, f"Flavor {server.get('flavorRef')} could not be found.")
        image = next((i for i in self.images if i.id == server.get("imageRef")), None)
        if image is None:
            raise nova_error(400, f"Image {server.get('imageRef')} could not be found.")
        networks = server.get("networks")
        if networks is None and mv >= (2, 37):
            raise nova_error(400, "Invalid input for field/attribute server. 'networks' is a required property")
        network = self.networks[0]
        if isinstance(networks, list):
            if len(networks) != 1:
                raise nova_error(400, "the fake takes exactly one network")
            network = next((n for n in self.networks if n.id == networks[0].get("uuid")), None)
            if network is None:
                raise nova_error(400, f"Network {networks[0].get('uuid')} could not be found.")
        tags = server.get("tags", [])
        if len(tags) > 50 or any(len(t) > TAG_MAX_LENGTH or "/" in t or "," in t or not t for t in tags):
            raise nova_error(400, f"Invalid input for field/attribute tags. Value: {tags}.")
        metadata = server.get("metadata", {})
        if not isinstance(metadata, dict) or any(len(k) > 255 or not isinstance(v, str) or len(v) > 255
                                                 for k, v in metadata.items()):
            raise nova_error(400, "Invalid input for field/attribute metadata.")
        user_data = server.get("user_data")
        text = ""
        if user_data is not None:
            if len(user_data) > USER_DATA_MAX:
                raise nova_error(400, "Invalid input for field/attribute user_data. Value: ... is too long")
            try:
                text = base64.b64decode(user_data, validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise nova_error(400, "Invalid input for field/attribute user_data. Value: ... "
                                      "is not a 'base64' formatted string") from None
        if "key_name" in server and server["key_name"] not in self.keypairs:
            raise nova_error(400, "Invalid key_name provided.")
        for group in server.get("security_groups", []):
            if group.get("name") not in self.security_groups:
                raise nova_error(400, f"Unable to find security_group with name or uuid '{group.get('name')}'.")
        if "availability_zone" in server and server["availability_zone"] not in self.availability_zones:
            raise nova_error(400, "The requested availability zone is not available")
        return {"flavor": flavor, "image": image, "network": network, "user_data": text, "tags": tags,
                "metadata": metadata}

    def _create_server(self, body: dict, mv: tuple[int, int], base: str) -> tuple[int, Any, dict[str, str]]:
        fault = self._fault("create")
        server = body.get("server", {})
        checked = self._validate_create(server, mv)
        with self._lock:
            self._ip_counter += 1
            ip = f"10.0.0.{self._ip_counter}"
        tags = dict(t.partition("=")[::2] for t in checked["tags"] if "=" in t)
        vm = FakeVm(ref=str(uuid.uuid4()), name=server["name"], tags=tags, user_data=checked["user_data"],
                    size=checked["flavor"].name, image=checked["image"].id,
                    extra={"metadata": checked["metadata"], "nova_tags": list(checked["tags"]),
                           "network": checked["network"].name, "ip": ip, "key_name": server.get("key_name"),
                           "security_groups": [g["name"] for g in server.get("security_groups", [])] or ["default"],
                           "availability_zone": server.get("availability_zone", "nova"),
                           "flavor_id": checked["flavor"].id, "microversion": f"{mv[0]}.{mv[1]}"})
        self.state.add(vm)
        if fault == Fault.CAPACITY:  # the scheduler finds no host: the build ends in ERROR
            timer = threading.Timer(self.state.build_delay_s, self.state.fail_build, args=(vm, NO_VALID_HOST))
            timer.daemon = True
            timer.start()
        else:
            self.state.schedule_running(vm)
        if fault == Fault.TIMEOUT:  # accepted and created, but the answer comes too late
            time.sleep(self.state.timeout_sleep_s)
        if self.state.create_delay_s:
            time.sleep(self.state.create_delay_s)
        answer = {"id": vm.ref, "links": self._links(base, vm), "OS-DCF:diskConfig": "MANUAL",
                  "security_groups": [{"name": g} for g in vm.extra["security_groups"]],
                  "adminPass": uuid.uuid4().hex[:12]}
        return 202, {"server": answer}, {"Location": f"{base}/compute/v2.1/servers/{vm.ref}"}

    def _delete_server(self, ref: str, vm: FakeVm | None) -> tuple[int, Any, dict[str, str]]:
        fault = self._fault("delete")
        if vm is None:
            raise nova_error(404, f"Instance {ref} could not be found.")
        with self.state.lock:
            if vm.state != "deleting":
                vm.extra["state_before_delete"] = vm.state
                vm.state = "deleting"
        timer = threading.Timer(self.delete_delay_s, self.state.remove, args=(ref,))
        timer.daemon = True
        timer.start()
        if fault == Fault.TIMEOUT:
            time.sleep(self.state.timeout_sleep_s)
        return 204, None, {}

    # -- listing -----------------------------------------------------------------------------
    @staticmethod
    def nova_tags(vm: FakeVm) -> list[str]:
        if "nova_tags" in vm.extra:
            return list(vm.extra["nova_tags"])
        return [f"{k}={v}" for k, v in vm.tags.items()]

    def _filter(self, query: dict) -> list[FakeVm]:
        """Nova's server-side filters: name (a regex), tags (all), tags-any, not-tags, not-tags-any."""
        def one(key: str) -> str | None:
            return query[key][0] if key in query else None

        with self.state.lock:
            vms = sorted(self.state.vms.values(), key=lambda vm: vm.created_at)
        name = one("name")
        if name is not None:
            pattern = re.compile(name)
            vms = [vm for vm in vms if pattern.search(vm.name)]
        for key, keep in (("tags", lambda have, want: want <= have), ("tags-any", lambda have, want: have & want),
                          ("not-tags", lambda have, want: not want <= have),
                          ("not-tags-any", lambda have, want: not have & want)):
            value = one(key)
            if value:
                want = set(value.split(","))
                vms = [vm for vm in vms if keep(set(self.nova_tags(vm)), want)]
        return vms

    @staticmethod
    def _links(base: str, vm: FakeVm) -> list[dict]:
        return [{"rel": "self", "href": f"{base}/compute/v2.1/servers/{vm.ref}"},
                {"rel": "bookmark", "href": f"{base}/compute/servers/{vm.ref}"}]

    def _render(self, vm: FakeVm, mv: tuple[int, int], base: str) -> dict:
        shown = vm.extra.get("state_before_delete", "running") if vm.state == "deleting" else vm.state
        status, vm_state, task_state, power = {
            "building": ("BUILD", "building", "spawning", 0),
            "running": ("ACTIVE", "active", None, 1),
            "error": ("ERROR", "error", None, 0),
            "shutoff": ("SHUTOFF", "stopped", None, 4),
            "deleted": ("DELETED", "deleted", None, 0),
        }.get(shown, ("ACTIVE", "active", None, 1))
        if vm.state == "deleting":
            task_state = "deleting"
        flavor = next((f for f in self.flavors if f.name == vm.size), None)
        server: dict[str, Any] = {
            "id": vm.ref, "name": vm.name, "status": status, "tenant_id": PROJECT_ID, "user_id": "u-hybrid",
            "metadata": vm.extra.get("metadata", dict(vm.tags)), "hostId": "" if status == "BUILD" else "h1",
            "created": datetime.fromtimestamp(vm.created_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "updated": now_iso(), "image": {"id": vm.image, "links": []}, "key_name": vm.extra.get("key_name"),
            "OS-EXT-STS:vm_state": vm_state, "OS-EXT-STS:task_state": task_state, "OS-EXT-STS:power_state": power,
            "OS-EXT-AZ:availability_zone": vm.extra.get("availability_zone", "nova"), "OS-DCF:diskConfig": "MANUAL",
            "accessIPv4": "", "accessIPv6": "", "progress": 0, "config_drive": "", "locked": False,
            "security_groups": [{"name": g} for g in vm.extra.get("security_groups", ["default"])],
            "os-extended-volumes:volumes_attached": [], "links": self._links(base, vm), "description": None,
            "addresses": {}, "OS-SRV-USG:launched_at": None, "OS-SRV-USG:terminated_at": None,
        }
        if status == "ACTIVE" and vm.extra.get("ip"):
            server["addresses"] = {vm.extra.get("network", "private"): [
                {"addr": vm.extra["ip"], "version": 4, "OS-EXT-IPS:type": "fixed",
                 "OS-EXT-IPS-MAC:mac_addr": "fa:16:3e:00:00:01"}]}
        if mv >= (2, 47):
            server["flavor"] = {"original_name": vm.size, "vcpus": flavor.vcpus if flavor else 1,
                                "ram": flavor.ram if flavor else 512, "disk": flavor.disk if flavor else 1,
                                "ephemeral": 0, "swap": 0, "extra_specs": {}}
        else:
            server["flavor"] = {"id": vm.extra.get("flavor_id", ""), "links": []}
        if mv >= (2, 26):
            server["tags"] = self.nova_tags(vm)
        if status == "ERROR":
            server["fault"] = {"code": 500, "created": now_iso(), "message": vm.extra.get("fault", "")}
        return server

    # -- helpers for tests -------------------------------------------------------------------
    def bodies(self, method: str, suffix: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method and c.path.rstrip("/").endswith(suffix)]


def settings_for(base_url: str, **overrides: Any) -> dict[str, Any]:
    """The pool ``settings:`` an admin would write for this fake (explicit auth, password in env)."""
    settings: dict[str, Any] = {
        "auth": {"auth_url": f"{base_url}/identity/v3", "username": USERNAME, "password_env": PASSWORD_ENV,
                 "project_name": PROJECT_NAME, "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": REGION,
        "flavor": "m1.small",
        "image": "ubuntu-24.04",
        "network": "private",
        "key_name": "ops",
        "security_groups": ["default"],
        "build_timeout_s": 60,
        "delete_timeout_s": 30,
        "poll_interval_s": 0.1,
        "request_timeout_s": 1.5,
        "max_retries": 0,
    }
    settings.update(overrides)
    return settings


@contextmanager
def start(tmp_path: str | Path, *, tls: bool = False, **overrides: Any) -> Iterator[CloudUnderTest]:
    """The fake on a loopback port and an OpenStack provider pointed at it (pool ``burst``, cluster ``conf``)."""
    from providers.openstack import OpenStackProvider

    state = FakeCloudState()
    state.timeout_sleep_s = 3.0
    app = FakeOpenStack(state, scheme="https" if tls else "http")
    with serve(app, tls=tls, tmp_dir=tmp_path) as served:
        settings = settings_for(served.base_url, **overrides)
        if served.ca_bundle:
            settings["ca_bundle"] = served.ca_bundle
        env = {PASSWORD_ENV: PASSWORD}
        with patched_env(env):
            provider = OpenStackProvider(state_dir=Path(tmp_path) / "state", cluster="conf")
            try:
                cut = CloudUnderTest(name="openstack", provider=provider,
                                     spec=PoolSpec(name="burst", cluster="conf", slots=2, settings=settings),
                                     state=state, settings=settings, env=env, base_url=served.base_url)
                cut.app = app  # type: ignore[attr-defined]  # the WSGI app, for wire-level assertions
                yield cut
            finally:
                provider.close()
