"""A fake of the slice of Azure the Azure provider calls: Entra ID (AAD) tokens and ARM compute VMs.

Why these endpoints and shapes: ``azure-identity`` (MSAL) and ``azure-mgmt-compute`` run for real
against it, over HTTPS with a throw-away CA, so token acquisition, bearer auth, ARM serialization
and long-running-operation polling all run as they do against Azure:

* ``GET  /{tenant}/v2.0/.well-known/openid-configuration`` - MSAL's tenant discovery;
* ``POST /{tenant}/oauth2/v2.0/token`` - client-credentials grant (a wrong secret: 401 ``invalid_client``);
* ``GET|PUT|DELETE /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines/{name}``;
* ``GET /subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Compute/virtualMachines`` (paged by ``nextLink``);
* ``GET /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}`` - the
  ``Azure-AsyncOperation`` status a PUT (201) or DELETE (202) points at.

ARM calls without a bearer token this fake issued get 401. A PUT is validated the way ARM does
for the fields the provider sends (400 ``InvalidParameter``, unknown subnet 400
``InvalidResourceReference``). Error bodies are ARM's ``{"error": {"code", "message"}}``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from providers.base import PoolSpec
from tests.fakes.common import CloudUnderTest, Fault, FakeCloudState, FakeVm, patched_env
from tests.fakes.server import serve

SUBSCRIPTION_ID = "5f1c2a9e-0000-4000-8000-00000000c0de"
TENANT_ID = "7d3e9b1a-0000-4000-8000-00000000beef"
CLIENT_ID = "0b8f4c2d-0000-4000-8000-00000000f00d"
RESOURCE_GROUP = "rg-burst"
LOCATION = "westeurope"
SECRET_ENV = "RM_TEST_AZURE_CLIENT_SECRET"
SUBNET_ID = (
    f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-network/providers/Microsoft.Network"
    "/virtualNetworks/vnet-burst/subnets/agents"
)
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFakeKeyForTestsOnly hybrid-rm-test"
CUSTOM_DATA_MAX_CHARS = 87380  # base64 characters (65535 bytes decoded)

_VMS = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Compute/virtualMachines"
    r"(?:/(?P<name>[^/]+))?$",
    re.IGNORECASE,
)
_OPERATION = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Compute/locations/(?P<loc>[^/]+)/operations/(?P<op>[^/]+)$",
    re.IGNORECASE,
)
_OIDC = re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$")
_TOKEN = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")

_STATUS_TEXT = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content", 400: "Bad Request",
                401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
                429: "Too Many Requests", 500: "Internal Server Error"}
_PROVISIONING = {"building": "Creating", "running": "Succeeded", "deleting": "Deleting", "error": "Failed"}
_FAILURE_MESSAGES = {
    "AllocationFailed": "Allocation failed. We do not have sufficient capacity for the requested VM size in this "
    "region. Read more about improving likelihood of allocation success at http://aka.ms/allocation-guidance",
}


class _Reply(Exception):
    """Raised inside a handler to answer at once with an ARM-shaped error."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class FakeAzure:
    """The WSGI app. Knobs a test may turn: ``capacity_mode``, ``auth_mode``, ``page_size``,
    ``subnets``, ``token_faults``; what it saw: ``bodies`` (PUT bodies by VM name), ``token_requests``."""

    def __init__(self, state: FakeCloudState, *, client_secret: str) -> None:
        self.state = state
        self.client_secret = client_secret
        self.subscription_id = SUBSCRIPTION_ID
        self.resource_group = RESOURCE_GROUP
        self.tenant_id = TENANT_ID
        self.client_id = CLIENT_ID
        self.subnets = {SUBNET_ID.lower()}  # subnets that exist (others: InvalidResourceReference)
        self.capacity_mode = "allocation"  # CAPACITY fault: "allocation" (LRO Failed) | "sku" (409 SkuNotAvailable)
        self.auth_mode = "401"  # AUTH fault: "401" AuthenticationFailed | "403" AuthorizationFailed
        self.page_size = 50
        self.token_faults = 0  # the next N token requests answer 401 invalid_client
        self.token_requests = 0
        self.bodies: dict[str, dict] = {}
        self.tokens: set[str] = set()
        self.operations: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()

    # -- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "")
        self.state.log_request(method, path)
        query = {key: values[-1] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        base = f"https://{environ.get('HTTP_HOST', '127.0.0.1')}"
        try:
            status, payload, headers = self._route(method, path, query, body, environ, base)
        except _Reply as reply:
            status, headers = reply.status, reply.headers
            payload = {"error": {"code": reply.code, "message": reply.message}}
        data = b"" if payload is None else json.dumps(payload).encode()
        header_list = [("Content-Type", "application/json; charset=utf-8"), ("Content-Length", str(len(data)))]
        header_list += [("x-ms-request-id", str(uuid.uuid4()))] + list(headers.items())
        start_response(f"{status} {_STATUS_TEXT.get(status, 'Status')}", header_list)
        return [data]

    def _route(self, method: str, path: str, query: dict, body: bytes, environ: dict, base: str):
        if match := _OIDC.match(path):
            return self._openid_configuration(match["tenant"], base)
        if match := _TOKEN.match(path):
            return self._token(match["tenant"], body)
        self._check_bearer(environ)
        if "api-version" not in query:
            raise _Reply(400, "MissingApiVersionParameter", "The api-version query parameter (?api-version=) is required")
        if match := _OPERATION.match(path):
            self._check_subscription(match["sub"])
            return self._operation(match["op"])
        if match := _VMS.match(path):
            self._check_subscription(match["sub"])
            if match["rg"].lower() != self.resource_group.lower():
                raise _Reply(404, "ResourceGroupNotFound", f"Resource group '{match['rg']}' could not be found.")
            name = match["name"]
            if name is None and method == "GET":
                return self._list(query, base)
            if name and method == "GET":
                return self._get(name)
            if name and method == "PUT":
                return self._put(name, body, base)
            if name and method == "DELETE":
                return self._delete(name, base)
        raise _Reply(404, "NotFound", f"No route for {method} {path}")

    # -- Entra ID --------------------------------------------------------------------------
    def _openid_configuration(self, tenant: str, base: str):
        if tenant != self.tenant_id:
            raise _Reply(400, "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
        root = f"{base}/{tenant}"
        return 200, {
            "token_endpoint": f"{root}/oauth2/v2.0/token",
            "authorization_endpoint": f"{root}/oauth2/v2.0/authorize",
            "device_authorization_endpoint": f"{root}/oauth2/v2.0/devicecode",
            "issuer": f"{root}/v2.0",
            "jwks_uri": f"{root}/discovery/v2.0/keys",
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "tenant_region_scope": "EU",
        }, {}

    def _token(self, tenant: str, body: bytes):
        form = {key: values[-1] for key, values in parse_qs(body.decode()).items()}
        with self._lock:
            self.token_requests += 1
            fault = self.token_faults > 0
            self.token_faults -= 1 if fault else 0
        if form.get("grant_type") != "client_credentials":
            return 400, _aad_error("unsupported_grant_type", "AADSTS70003: The app requested an unsupported grant type."), {}
        if fault or tenant != self.tenant_id or form.get("client_id") != self.client_id or \
                form.get("client_secret") != self.client_secret:
            return 401, _aad_error(
                "invalid_client",
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the "
                f"client secret value, not the client secret ID, for a secret added to app '{form.get('client_id')}'.",
            ), {}
        token = "fake-arm-token-" + secrets.token_urlsafe(16)
        with self._lock:
            self.tokens.add(token)
        return 200, {"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": token}, {}

    def _check_bearer(self, environ: dict) -> None:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header:
            raise _Reply(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.")
        scheme, _, token = header.partition(" ")
        if scheme != "Bearer" or token not in self.tokens:
            raise _Reply(401, "InvalidAuthenticationToken", "The access token is invalid.",
                         {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="The access token is invalid"'})

    def _check_subscription(self, sub: str) -> None:
        if sub.lower() != self.subscription_id.lower():
            raise _Reply(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    # -- faults ----------------------------------------------------------------------------
    def _fault(self, op: str) -> Fault | None:
        """Answer an injected fault as ARM does; TIMEOUT and LRO-reported faults are returned."""
        fault = self.state.take_fault(op)
        if fault is None or fault is Fault.TIMEOUT:
            return fault
        if fault is Fault.QUOTA:
            raise _Reply(409, "OperationNotAllowed",
                         "Operation could not be completed as it results in exceeding approved standardDSv3Family "
                         f"Cores quota. Additional details - Deployment Model: Resource Manager, Location: {LOCATION}, "
                         "Current Limit: 10, Current Usage: 8, Additional Required: 4, (Minimum) New Limit Required: 12.")
        if fault is Fault.CAPACITY:
            if op == "create" and self.capacity_mode == "allocation":
                return fault  # the create is accepted; its operation ends Failed (AllocationFailed)
            raise _Reply(409, "SkuNotAvailable",
                         f"The requested VM size for resource 'Following SKUs have failed for Capacity Restrictions: "
                         f"Standard_D4s_v3' is currently not available in location '{LOCATION}'. Please try another "
                         "size or deploy to a different location or different zone. See https://aka.ms/azureskunotavailable")
        if fault is Fault.THROTTLED:
            raise _Reply(429, "TooManyRequests",
                         "The request is being throttled as the limit has been reached for operation type - "
                         "PutVM3Min. For more information, see - https://aka.ms/throttling",
                         {"Retry-After": str(self.state.retry_after_s)})
        if fault is Fault.SERVER_ERROR:
            raise _Reply(500, "InternalServerError", "Encountered internal server error. Please try again.")
        if fault is Fault.AUTH:
            if self.auth_mode == "403":
                raise _Reply(403, "AuthorizationFailed",
                             f"The client '{self.client_id}' with object id '{self.client_id}' does not have "
                             "authorization to perform action 'Microsoft.Compute/virtualMachines/write' over scope "
                             f"'/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}'.")
            raise _Reply(401, "AuthenticationFailed", "Authentication failed.",
                         {"WWW-Authenticate": 'Bearer error="invalid_token", error_description="Authentication failed"'})
        if fault is Fault.BAD_CONFIG:
            if op == "create":
                raise _Reply(404, "PlatformImageNotFound",
                             "The platform image 'Canonical:no-such-offer:server:latest' is not available. Verify "
                             "that all fields in the storage profile are correct.")
            raise _Reply(404, "ResourceGroupNotFound", f"Resource group '{self.resource_group}' could not be found.")
        raise AssertionError(fault)

    def _stall(self) -> None:
        time.sleep(self.state.timeout_sleep_s)

    # -- VMs -------------------------------------------------------------------------------
    def _vm_id(self, name: str) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.Compute/virtualMachines/{name}")

    def _find(self, name: str) -> FakeVm | None:
        with self.state.lock:
            return next((vm for vm in self.state.vms.values() if vm.name.lower() == name.lower()), None)

    def _vm_json(self, vm: FakeVm) -> dict:
        sent = json.loads(json.dumps(vm.extra.get("body") or {}))
        properties = sent.get("properties") or {"hardwareProfile": {"vmSize": vm.size or "Standard_B2s"}}
        properties.get("osProfile", {}).pop("customData", None)  # ARM never returns custom data
        properties["provisioningState"] = _PROVISIONING.get(vm.state, "Succeeded")
        properties["vmId"] = vm.extra.setdefault("vm_id", str(uuid.uuid4()))
        return {
            "name": vm.name,
            "id": self._vm_id(vm.name),
            "type": "Microsoft.Compute/virtualMachines",
            "location": sent.get("location", LOCATION),
            "tags": dict(vm.tags),
            "properties": properties,
        }

    def _get(self, name: str):
        vm = self._find(name)
        if vm is None:
            raise _Reply(404, "ResourceNotFound",
                         f"The Resource 'Microsoft.Compute/virtualMachines/{name}' under resource group "
                         f"'{self.resource_group}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix")
        return 200, self._vm_json(vm), {}

    def _list(self, query: dict, base: str):
        with self.state.lock:
            vms = sorted(self.state.vms.values(), key=lambda vm: (vm.created_at, vm.name))
        fault = self._fault("list")
        if fault is Fault.TIMEOUT:
            self._stall()
        start = int(query.get("$skiptoken", "0") or 0)
        page = vms[start:start + self.page_size]
        payload: dict[str, Any] = {"value": [self._vm_json(vm) for vm in page]}
        if start + self.page_size < len(vms):
            payload["nextLink"] = (f"{base}/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                                   f"/providers/Microsoft.Compute/virtualMachines?api-version={query['api-version']}"
                                   f"&$skiptoken={start + self.page_size}")
        return 200, payload, {}

    def _put(self, name: str, raw: bytes, base: str):
        fault = self._fault("create")
        if self.state.create_delay_s:
            time.sleep(self.state.create_delay_s)
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            raise _Reply(400, "InvalidRequestFormat", "Cannot parse the request.") from None
        existing = self._find(name)
        if existing is not None:  # ARM PUT is create-or-update: no second VM
            return 200, self._vm_json(existing), {}
        user_data = self._validate(name, body)
        properties = body["properties"]
        image = properties["storageProfile"]["imageReference"]
        vm = FakeVm(
            ref=self._vm_id(name), name=name, tags=dict(body.get("tags") or {}), user_data=user_data,
            size=properties["hardwareProfile"]["vmSize"],
            image=image.get("id") or ":".join(image.get(k, "") for k in ("publisher", "offer", "sku", "version")),
            extra={"body": body, "resource_group": self.resource_group},
        )
        with self._lock:
            self.bodies[name] = body
        self.state.add(vm)
        if fault is Fault.CAPACITY:
            self.state.fail_build(vm, "AllocationFailed")
            answer = self._vm_json(vm)
            answer["properties"]["provisioningState"] = "Creating"
        else:
            self.state.schedule_running(vm)
            answer = self._vm_json(vm)
        headers = self._async_headers(base, "create", vm.ref)
        if fault is Fault.TIMEOUT:
            self._stall()  # ARM accepted and created it; the client has given up waiting
        return 201, answer, headers

    def _validate(self, name: str, body: dict) -> str:
        """ARM's checks on the fields the provider sends; returns the decoded custom data."""
        if not body.get("location"):
            raise _Reply(400, "LocationRequired", "The location property is required for this definition.")
        properties = body.get("properties") or {}

        def need(path: str) -> Any:
            value: Any = properties
            for part in path.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            if value in (None, "", []):
                raise _Reply(400, "InvalidParameter", f"Required parameter '{path}' is missing (null).")
            return value

        need("hardwareProfile.vmSize")
        need("storageProfile.imageReference")
        need("osProfile.adminUsername")
        need("osProfile.computerName")
        linux = need("osProfile.linuxConfiguration")
        if linux.get("disablePasswordAuthentication") and not (linux.get("ssh") or {}).get("publicKeys"):
            raise _Reply(400, "InvalidParameter", "Required parameter 'ssh.publicKeys' is missing when password "
                         "authentication is disabled.")
        network = need("networkProfile")
        nics = network.get("networkInterfaceConfigurations") or []
        if not nics or not network.get("networkApiVersion"):
            raise _Reply(400, "InvalidParameter", "networkProfile needs networkInterfaceConfigurations and "
                         "networkApiVersion to create a NIC with the VM.")
        for nic in nics:
            for ipconfig in (nic.get("properties") or {}).get("ipConfigurations") or []:
                subnet = ((ipconfig.get("properties") or {}).get("subnet") or {}).get("id", "")
                if subnet.lower() not in self.subnets:
                    raise _Reply(400, "InvalidResourceReference",
                                 f"Resource {subnet} referenced by resource {self._vm_id(name)} was not found. "
                                 "Please make sure that the referenced resource exists, and that both resources "
                                 "are in the same region.")
        custom = properties.get("osProfile", {}).get("customData")
        if custom is None:
            return ""
        try:
            decoded = base64.b64decode(custom, validate=True)
        except ValueError:
            decoded = None
        if decoded is None or len(custom) > CUSTOM_DATA_MAX_CHARS:
            raise _Reply(400, "InvalidParameter", "Custom data in OSProfile must be in Base64 encoding and with a "
                         f"maximum length of {CUSTOM_DATA_MAX_CHARS} characters.")
        return decoded.decode("utf-8")

    def _delete(self, name: str, base: str):
        fault = self._fault("delete")
        vm = self._find(name)
        if vm is None:
            return 204, None, {}  # ARM: deleting what does not exist is a no-op
        with self.state.lock:
            vm.state = "deleting"
        timer = threading.Timer(self.state.build_delay_s, self.state.remove, args=(vm.ref,))
        timer.daemon = True
        timer.start()
        headers = self._async_headers(base, "delete", vm.ref)
        headers["Location"] = headers["Azure-AsyncOperation"] + "&monitor=true"
        if fault is Fault.TIMEOUT:
            self._stall()
        return 202, None, headers

    # -- long-running operations -----------------------------------------------------------
    def _async_headers(self, base: str, kind: str, ref: str) -> dict[str, str]:
        op = str(uuid.uuid4())
        with self._lock:
            self.operations[op] = {"kind": kind, "ref": ref, "start": _now()}
        return {"Azure-AsyncOperation": (f"{base}/subscriptions/{self.subscription_id}/providers/Microsoft.Compute"
                                         f"/locations/{LOCATION}/operations/{op}?p={uuid.uuid4()}&api-version=2024-07-01"),
                "Azure-AsyncNotification": "Enabled"}

    def _operation(self, op: str):
        record = self.operations.get(op)
        if record is None:
            raise _Reply(404, "NotFound", f"Operation {op} not found.")
        body: dict[str, Any] = {"startTime": record["start"], "name": op}
        with self.state.lock:
            vm = self.state.vms.get(record["ref"])
            vm_state = vm.state if vm else None
            reason = vm.extra.get("fault") if vm else None
        if record["kind"] == "delete":
            body["status"] = "Succeeded" if vm is None else "InProgress"
        elif vm is None:
            body.update(status="Canceled", error={"code": "OperationPreempted",
                                                  "message": "Operation execution has been preempted by a more recent operation."})
        elif vm_state == "error":
            body.update(status="Failed", error={"code": reason, "message": _FAILURE_MESSAGES.get(reason, reason)})
        else:
            body["status"] = "Succeeded" if vm_state == "running" else "InProgress"
        if body["status"] != "InProgress":
            body["endTime"] = _now()
        return 200, body, {}


def _aad_error(code: str, description: str) -> dict:
    return {"error": code, "error_description": description, "error_codes": [int(description[6:13])]
            if description[6:13].isdigit() else [], "timestamp": _now(), "trace_id": str(uuid.uuid4()),
            "correlation_id": str(uuid.uuid4())}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.0000000+00:00", time.gmtime())


def pool_settings(base_url: str, ca_bundle: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The pool's ``settings:`` block as an admin would write it, pointing at the fake."""
    settings: dict[str, Any] = {
        "subscription_id": SUBSCRIPTION_ID,
        "resource_group": RESOURCE_GROUP,
        "location": LOCATION,
        "vm_size": "Standard_D4s_v3",
        "image": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
        "subnet_id": SUBNET_ID,
        "admin_username": "rmadmin",
        "ssh_public_key": SSH_KEY,
        "tenant_id": TENANT_ID,
        "client_id": CLIENT_ID,
        "client_secret_env": SECRET_ENV,
        "resource_manager_url": base_url,
        "authority_host": base_url,
        "ca_bundle": ca_bundle,
        "request_timeout_s": 1.5,
        "max_retries": 0,
        "polling_interval_s": 0.1,
        "operation_timeout_s": 60,
    }
    settings.update(overrides)
    return {key: value for key, value in settings.items() if value is not None}  # None: leave the key out


@contextmanager
def start_with_fake(tmp_path: str | Path, **overrides: Any) -> Iterator[tuple[CloudUnderTest, FakeAzure]]:
    """Like :func:`start`, also yielding the fake app (its knobs and the bodies it received)."""
    from providers.azure import PROVIDER

    state = FakeCloudState()
    state.timeout_sleep_s = 3.0
    secret = "fake-sp-secret-" + secrets.token_urlsafe(12)
    fake = FakeAzure(state, client_secret=secret)
    env = {SECRET_ENV: secret}
    with serve(fake, tls=True, tmp_dir=tmp_path) as served, patched_env(env):
        settings = pool_settings(served.base_url, **{"ca_bundle": served.ca_bundle, **overrides})
        provider = PROVIDER(state_dir=tmp_path, cluster="conf")
        spec = PoolSpec(name="burst", cluster="conf", slots=2, settings=settings)
        try:
            yield CloudUnderTest("azure", provider, spec, state, settings, dict(env), served.base_url, app=fake), fake
        finally:
            provider.close()


@contextmanager
def start(tmp_path: str | Path) -> Iterator[CloudUnderTest]:
    """A running fake Azure (HTTPS) and an Azure provider configured for it."""
    with start_with_fake(tmp_path) as (cloud, _fake):
        yield cloud
