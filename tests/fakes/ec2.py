"""A fake of the Amazon EC2 Query API, enough for Libcloud's EC2 driver (our ``libcloud`` provider).

Why the wire format matters: Libcloud signs each request (SigV4, all parameters in the query
string), parses XML in the ``2016-11-15`` namespace and turns ``<Errors><Error><Code>`` into
exceptions; the fake speaks exactly that so the driver's real serialization, signing and
error handling run. It checks the SigV4 signature with the secret it was given (a wrong
secret is a 403 ``SignatureDoesNotMatch``, as on AWS), honours ``ClientToken`` idempotency and
``tag:`` filters, and keeps a terminated instance listed as ``terminated`` (code 48) briefly,
as EC2 does.

Actions: RunInstances, DescribeInstances, TerminateInstances, CreateTags, DescribeAddresses
(Libcloud's ``list_nodes`` asks for elastic IPs after every non-empty listing).

Injected faults answer with EC2's real codes: QUOTA 400 ``InstanceLimitExceeded``, CAPACITY 500
``InsufficientInstanceCapacity``, THROTTLED 503 ``RequestLimitExceeded`` (real EC2 sends no
Retry-After; the fake adds one so the shared suite can check it is carried through),
SERVER_ERROR 500 ``InternalError``, AUTH 401 ``AuthFailure``, BAD_CONFIG 400
``InvalidAMIID.NotFound`` (list/delete: ``InvalidParameterValue`` / ``InvalidInstanceID.Malformed``);
TIMEOUT stalls ``timeout_sleep_s``: a create is done anyway (EC2 had accepted it), a terminate
is not (the call was lost; the next terminate finishes it), a listing answers late.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote
from xml.sax.saxutils import escape

from providers.base import PoolSpec
from tests.fakes.common import CloudUnderTest, FakeCloudState, FakeVm, Fault, patched_env
from tests.fakes.server import serve

NAMESPACE = "http://ec2.amazonaws.com/doc/2016-11-15/"
ACCESS_KEY = "AKIAFAKEHYBRIDRM0001"
SECRET_ENV = "AWS_SECRET_ACCESS_KEY"
REGION = "us-east-1"
USER_DATA_LIMIT = 16 * 1024
STATE_CODES = {"building": (0, "pending"), "running": (16, "running"), "deleting": (32, "shutting-down"),
               "error": (48, "terminated"), "deleted": (48, "terminated")}
#: Parameters of the request's envelope, not of the launch (left out of the ClientToken comparison).
UNSIGNED_PARAMS = {"ClientToken", "Signature", "SignatureVersion", "SignatureMethod", "AWSAccessKeyId", "Timestamp",
                   "Version", "Expires"}
SIGNATURE_MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your "
                      "AWS Secret Access Key and signing method.")
#: EC2 error (status, code, message) of each injected fault, per operation.
FAULTS = {
    Fault.QUOTA: (400, "InstanceLimitExceeded", "You have requested more instances (21) than your current instance "
                                                "limit of 20 allows for the specified instance type."),
    Fault.CAPACITY: (500, "InsufficientInstanceCapacity", "We currently do not have sufficient capacity in the "
                                                          "Availability Zone you requested (us-east-1a)."),
    Fault.THROTTLED: (503, "RequestLimitExceeded", "Request limit exceeded."),
    Fault.SERVER_ERROR: (500, "InternalError", "An internal error has occurred."),
    Fault.AUTH: (401, "AuthFailure", "AWS was not able to validate the provided access credentials"),
    Fault.BAD_CONFIG: (400, "InvalidAMIID.NotFound", "The image id '[ami-00000000]' does not exist"),
}
FAULTS_NOT_CREATE = {
    "list": {Fault.BAD_CONFIG: (400, "InvalidParameterValue", "The filter 'tag:' is invalid")},
    "delete": {Fault.BAD_CONFIG: (400, "InvalidInstanceID.Malformed", "Invalid id: \"i-?\"")},
}


_APPS: weakref.WeakValueDictionary[int, FakeEC2] = weakref.WeakValueDictionary()


def fake_for(state: FakeCloudState) -> FakeEC2:
    """The FakeEC2 app serving ``state`` (for a test's wire assertions through a CloudUnderTest)."""
    return _APPS[id(state)]


class EC2Error(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class FakeEC2:
    """The WSGI app.

    For a test's wire assertions and its own faults: ``calls`` keeps (action, parameters) of
    every request; ``next_errors[action]`` holds (status, code, message, headers) to answer the
    next calls of that action with; ``describe_lag_s`` hides instances younger than that from
    DescribeInstances (EC2 is eventually consistent: a just-launched instance may not be listed).
    """

    def __init__(self, state: FakeCloudState, secret: str, access_key: str = ACCESS_KEY,
                 terminated_linger_s: float = 0.5) -> None:
        self.state = state
        self.access_key = access_key
        self.secret = secret
        self.terminated_linger_s = terminated_linger_s
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.tokens: dict[str, tuple[str, str]] = {}  # ClientToken -> (instance id, request fingerprint)
        self.next_errors: dict[str, list[tuple[int, str, str, dict[str, str]]]] = {}
        self.describe_lag_s = 0.0
        self._lock = threading.Lock()
        _APPS[id(state)] = self

    # -- WSGI ------------------------------------------------------------------------------
    def __call__(self, environ: dict, start_response: Any) -> list[bytes]:
        method = environ["REQUEST_METHOD"]
        query = environ.get("QUERY_STRING", "")
        body = b""
        if method == "POST":
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        params = dict(parse_qsl(query, keep_blank_values=True))
        if body and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        action = params.get("Action", "")
        self.state.log_request(method, f"/?Action={action}")
        with self._lock:
            self.calls.append((action, params))
        headers: list[tuple[str, str]] = []
        try:
            self._authenticate(environ, method, query, body)
            handler = getattr(self, f"_{action}", None)
            if handler is None:
                raise EC2Error(400, "InvalidAction", f"The action {action} is not valid for this web service.")
            with self._lock:
                queued = self.next_errors.get(action) or []
                error = queued.pop(0) if queued else None
            if error is not None:
                raise EC2Error(*error)
            status, xml = 200, handler(params, headers)
        except EC2Error as error:
            status, xml = error.status, _error_xml(error.code, error.message)
            headers.extend(error.headers.items())
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 500: "Internal Server Error",
                  503: "Service Unavailable"}.get(status, "Error")
        data = xml.encode()
        start_response(f"{status} {reason}", [("Content-Type", "text/xml;charset=UTF-8"),
                                              ("Content-Length", str(len(data)))] + headers)
        return [data]

    def _authenticate(self, environ: dict, method: str, query: str, body: bytes) -> None:
        """SigV2 or SigV4 as AWS checks them: unknown key -> 401 AuthFailure, bad signature -> 403."""
        params = dict(parse_qsl(query, keep_blank_values=True))
        if params.get("SignatureVersion") == "2":
            return self._authenticate_v2(environ, method, params)
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        fields = dict(part.strip().split("=", 1) for part in authorization.partition(" ")[2].split(",") if "=" in part)
        credential = fields.get("Credential", "").split("/")
        if not authorization.startswith("AWS4-HMAC-SHA256") or len(credential) != 5 or credential[0] != self.access_key:
            raise EC2Error(401, "AuthFailure", "AWS was not able to validate the provided access credentials")
        _, date, region, service, _ = credential
        signed = fields.get("SignedHeaders", "").split(";")
        canonical_headers = "".join(f"{name}:{_header(environ, name).strip()}\n" for name in signed)
        canonical_query = "&".join(f"{quote(k, safe='')}={quote(v, safe='~')}"
                                   for k, v in sorted(parse_qsl(query, keep_blank_values=True)))
        payload = _header(environ, "x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
        canonical = "\n".join([method, environ.get("PATH_INFO") or "/", canonical_query, canonical_headers,
                               ";".join(signed), payload])
        scope = "/".join(credential[1:])
        to_sign = "\n".join(["AWS4-HMAC-SHA256", _header(environ, "x-amz-date"), scope,
                             hashlib.sha256(canonical.encode()).hexdigest()])
        key = ("AWS4" + self.secret).encode()
        for part in (date, region, service, "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        expected = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            raise EC2Error(403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)

    def _authenticate_v2(self, environ: dict, method: str, params: dict[str, str]) -> None:
        if params.get("AWSAccessKeyId") != self.access_key:
            raise EC2Error(401, "AuthFailure", "AWS was not able to validate the provided access credentials")
        canonical = "&".join(f"{quote(k, safe='')}={quote(v, safe='-_~')}"
                             for k, v in sorted(params.items()) if k != "Signature")
        to_sign = "\n".join([method, environ.get("HTTP_HOST", "").lower(), environ.get("PATH_INFO") or "/", canonical])
        expected = base64.b64encode(hmac.new(self.secret.encode(), to_sign.encode(), hashlib.sha256).digest()).decode()
        if params.get("SignatureMethod") != "HmacSHA256" or not hmac.compare_digest(expected, params.get("Signature", "")):
            raise EC2Error(403, "SignatureDoesNotMatch", SIGNATURE_MISMATCH)

    def _fault_error(self, fault: Fault, op: str) -> EC2Error:
        status, code, message = FAULTS_NOT_CREATE.get(op, {}).get(fault, FAULTS[fault])
        headers = {"Retry-After": str(self.state.retry_after_s)} if fault == Fault.THROTTLED else {}
        return EC2Error(status, code, message, headers)

    def _fault(self, op: str) -> None:
        fault = self.state.take_fault(op)
        if fault is None:
            return
        if fault == Fault.TIMEOUT:
            time.sleep(self.state.timeout_sleep_s)  # then answer (and act): the client has given up
            return
        raise self._fault_error(fault, op)

    # -- actions ---------------------------------------------------------------------------
    def _RunInstances(self, params: dict[str, str], headers: list) -> str:
        fault = self.state.take_fault("create")
        if fault is not None and fault != Fault.TIMEOUT:
            raise self._fault_error(fault, "create")
        image, size = params.get("ImageId", ""), params.get("InstanceType", "")
        if not image.startswith("ami-"):
            raise EC2Error(400, "InvalidAMIID.Malformed", f"Invalid id: \"{image}\" (expecting \"ami-...\")")
        if params.get("MinCount") != "1" or params.get("MaxCount") != "1":
            raise EC2Error(400, "InvalidParameterValue", "the fake launches one instance per call")
        try:
            user_data = base64.b64decode(params.get("UserData", ""), validate=True).decode()
        except ValueError:
            raise EC2Error(400, "InvalidParameterValue", "Invalid BASE64 encoding of user data.") from None
        if len(user_data.encode()) > USER_DATA_LIMIT:
            raise EC2Error(400, "InvalidParameterValue", f"User data is limited to {USER_DATA_LIMIT} bytes")
        tags = _tag_specification(params)
        token = params.get("ClientToken")
        fingerprint = hashlib.sha256(repr(sorted((k, v) for k, v in params.items()
                                                 if k not in UNSIGNED_PARAMS)).encode()).hexdigest()
        with self._lock:
            if token and token in self.tokens:
                ref, seen = self.tokens[token]
                if seen != fingerprint:
                    raise EC2Error(400, "IdempotentParameterMismatch", "The client token you have provided is "
                                                                       "associated with a resource that is already "
                                                                       "deleted or has different parameters.")
                vm = self.state.vms.get(ref) or self.state.deleted[ref]
            else:
                ref = "i-" + secrets.token_hex(9)[:17]
                vm = FakeVm(ref=ref, name=tags.get("Name", ref), tags=tags, user_data=user_data, size=size, image=image,
                            extra={"reservation": "r-" + secrets.token_hex(9)[:17], "client_token": token or "",
                                   "private_ip": f"10.0.{len(self.calls) // 250 % 250}.{len(self.calls) % 250 + 4}",
                                   "zone": params.get("Placement.AvailabilityZone", f"{REGION}a"),
                                   "key_name": params.get("KeyName", ""), "subnet": params.get("SubnetId", ""),
                                   "spot": params.get("InstanceMarketOptions.MarketType") == "spot",
                                   "launch_time": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())})
                if token:
                    self.tokens[token] = (ref, fingerprint)
                self.state.add(vm)
                self.state.schedule_running(vm)
        if self.state.create_delay_s:
            time.sleep(self.state.create_delay_s)  # a slow cloud: accepted, answers late
        if fault == Fault.TIMEOUT:
            time.sleep(self.state.timeout_sleep_s)  # accepted, then too slow to answer
        return _response("RunInstancesResponse", f"<reservationId>{vm.extra['reservation']}</reservationId>"
                         f"<ownerId>123456789012</ownerId><groupSet/><instancesSet>{_instance_xml(vm)}</instancesSet>")

    def _DescribeInstances(self, params: dict[str, str], headers: list) -> str:
        self._fault("list")
        ids = {v for k, v in params.items() if k.startswith("InstanceId.")}
        filters = _filters(params)
        with self.state.lock:
            now = time.time()
            vms = [vm for vm in self.state.vms.values() if vm.created_at <= now - self.describe_lag_s]
            vms += [vm for vm in self.state.deleted.values() if vm.extra.get("gone_at", 0) > now]
            missing = ids - {vm.ref for vm in vms}
            if missing:
                raise EC2Error(400, "InvalidInstanceID.NotFound",
                               f"The instance ID '{sorted(missing)[0]}' does not exist")
            chosen = [vm for vm in vms if (not ids or vm.ref in ids) and _matches(vm, filters)]
            reservations: dict[str, list[FakeVm]] = {}
            for vm in chosen:
                reservations.setdefault(vm.extra.get("reservation", f"r-{vm.ref}"), []).append(vm)
            items = "".join(f"<item><reservationId>{rid}</reservationId><ownerId>123456789012</ownerId><groupSet/>"
                            f"<instancesSet>{''.join(_instance_xml(vm) for vm in group)}</instancesSet></item>"
                            for rid, group in reservations.items())
        return _response("DescribeInstancesResponse", f"<reservationSet>{items}</reservationSet>")

    def _TerminateInstances(self, params: dict[str, str], headers: list) -> str:
        fault = self.state.take_fault("delete")
        if fault == Fault.TIMEOUT:  # the call is lost: nothing is terminated, a retried terminate finishes it
            time.sleep(self.state.timeout_sleep_s)
            raise EC2Error(*FAULTS[Fault.SERVER_ERROR])
        if fault is not None:
            raise self._fault_error(fault, "delete")
        ids = [v for k, v in sorted(params.items()) if k.startswith("InstanceId.")]
        items = []
        with self.state.lock:
            for ref in ids:
                vm = self.state.vms.get(ref) or self.state.deleted.get(ref)
                if vm is None:
                    raise EC2Error(400, "InvalidInstanceID.NotFound", f"The instance ID '{ref}' does not exist")
                previous = STATE_CODES[vm.state]
                if vm.state in ("building", "running", "error"):
                    vm.state = "deleting"
                    timer = threading.Timer(self.state.build_delay_s, self._finish_termination, args=(ref,))
                    timer.daemon = True
                    timer.start()
                current = STATE_CODES[vm.state]
                items.append(f"<item><instanceId>{ref}</instanceId>"
                             f"<currentState><code>{current[0]}</code><name>{current[1]}</name></currentState>"
                             f"<previousState><code>{previous[0]}</code><name>{previous[1]}</name></previousState>"
                             "</item>")
        return _response("TerminateInstancesResponse", f"<instancesSet>{''.join(items)}</instancesSet>")

    def _finish_termination(self, ref: str) -> None:
        vm = self.state.remove(ref)  # listed as terminated (48) a little longer, as EC2 does
        if vm is not None:
            vm.extra["gone_at"] = time.time() + self.terminated_linger_s

    def _CreateTags(self, params: dict[str, str], headers: list) -> str:
        ids = [v for k, v in params.items() if k.startswith("ResourceId.")]
        tags = _indexed_tags(params, "Tag.")
        with self.state.lock:
            for ref in ids:
                vm = self.state.vms.get(ref)
                if vm is None:
                    raise EC2Error(400, "InvalidInstanceID.NotFound", f"The instance ID '{ref}' does not exist")
                vm.tags.update(tags)
                if "Name" in tags:
                    vm.name = tags["Name"]
        return _response("CreateTagsResponse", "<return>true</return>")

    def _DescribeAddresses(self, params: dict[str, str], headers: list) -> str:
        return _response("DescribeAddressesResponse", "<addressesSet/>")  # no elastic IPs in this account


# -- XML and parameter helpers --------------------------------------------------------------
def _header(environ: dict, name: str) -> str:
    key = name.upper().replace("-", "_")
    if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        return environ.get(key, "")
    return environ.get(f"HTTP_{key}", "")


def _response(root: str, inner: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root} xmlns="{NAMESPACE}">'
            f"<requestId>{uuid.uuid4()}</requestId>{inner}</{root}>")


def _error_xml(code: str, message: str) -> str:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>'
            f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{uuid.uuid4()}</RequestID></Response>")


def _instance_xml(vm: FakeVm) -> str:
    code, name = STATE_CODES.get(vm.state, (48, "terminated"))
    extra = vm.extra
    tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in vm.tags.items())
    public = f"<ipAddress>203.0.113.{sum(vm.ref.encode()) % 250 + 1}</ipAddress>" if name == "running" else ""
    reason = "<stateReason><code>Server.InsufficientInstanceCapacity</code></stateReason>" if vm.state == "error" else ""
    lifecycle = "<instanceLifecycle>spot</instanceLifecycle>" if extra.get("spot") else ""
    subnet = f"<subnetId>{extra['subnet']}</subnetId><vpcId>vpc-0fake</vpcId>" if extra.get("subnet") else ""
    return (f"<item><instanceId>{vm.ref}</instanceId><imageId>{escape(vm.image or 'ami-foreign')}</imageId>"
            f"<instanceState><code>{code}</code><name>{name}</name></instanceState>{reason}"
            f"<privateDnsName>ip-{extra.get('private_ip', '10.9.9.9').replace('.', '-')}.ec2.internal</privateDnsName>"
            f"<dnsName/><reason/><keyName>{escape(extra.get('key_name', ''))}</keyName><amiLaunchIndex>0</amiLaunchIndex>"
            f"<productCodes/><instanceType>{escape(vm.size or 't3.micro')}</instanceType>"
            f"<launchTime>{extra.get('launch_time', '2024-01-01T00:00:00.000Z')}</launchTime>"
            f"<placement><availabilityZone>{extra.get('zone', REGION + 'a')}</availabilityZone><groupName/>"
            f"<tenancy>default</tenancy></placement><monitoring><state>disabled</state></monitoring>{subnet}"
            f"<privateIpAddress>{extra.get('private_ip', '10.9.9.9')}</privateIpAddress>{public}"
            f"<groupSet/><architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType>"
            f"<rootDeviceName>/dev/xvda</rootDeviceName><blockDeviceMapping/>{lifecycle}"
            f"<virtualizationType>hvm</virtualizationType><clientToken>{escape(extra.get('client_token', ''))}"
            f"</clientToken><tagSet>{tags}</tagSet><hypervisor>xen</hypervisor><networkInterfaceSet/>"
            f"<ebsOptimized>false</ebsOptimized></item>")


def _indexed_tags(params: dict[str, str], prefix: str) -> dict[str, str]:
    tags = {}
    for key, value in params.items():
        if key.startswith(prefix) and key.endswith(".Key"):
            tags[value] = params.get(key[:-4] + ".Value", "")
    return tags


def _tag_specification(params: dict[str, str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    n = 1
    while f"TagSpecification.{n}.ResourceType" in params:
        if params[f"TagSpecification.{n}.ResourceType"] == "instance":
            tags.update(_indexed_tags(params, f"TagSpecification.{n}.Tag."))
        n += 1
    return tags


def _filters(params: dict[str, str]) -> list[tuple[str, set[str]]]:
    filters = []
    n = 1
    while f"Filter.{n}.Name" in params:
        values = {v for k, v in params.items() if k.startswith(f"Filter.{n}.Value.")}
        name = params[f"Filter.{n}.Name"]
        if not (name.startswith("tag:") or name in ("tag-key", "instance-state-name", "instance-id")):
            raise EC2Error(400, "InvalidParameterValue", f"The filter '{name}' is invalid")
        filters.append((name, values))
        n += 1
    return filters


def _matches(vm: FakeVm, filters: list[tuple[str, set[str]]]) -> bool:
    for name, values in filters:
        if name.startswith("tag:"):
            value = vm.tags.get(name[4:])
        elif name == "tag-key":
            value = next((k for k in vm.tags if k in values), None)
        elif name == "instance-state-name":
            value = STATE_CODES.get(vm.state, (48, "terminated"))[1]
        else:
            value = vm.ref
        if value not in values:
            return False
    return True


# -- the conformance entry point -------------------------------------------------------------
@contextmanager
def serve_ec2(tmp_path: Path, *, tls: bool = False, secret: str | None = None) -> Iterator[tuple[FakeEC2, Any]]:
    """The fake on a loopback port (plain HTTP unless ``tls``), and where it is served."""
    state = FakeCloudState()
    state.timeout_sleep_s = 3.0
    app = FakeEC2(state, secret or "fake-secret-" + secrets.token_hex(8))
    with serve(app, tls=tls, tmp_dir=tmp_path) as served:
        yield app, served


def settings_for(served: Any, **overrides: Any) -> dict[str, Any]:
    """The pool ``settings:`` block an admin would write to reach the fake."""
    settings: dict[str, Any] = {
        "driver": "ec2",
        "key": ACCESS_KEY,
        "secret_env": SECRET_ENV,
        "driver_args": {"region": REGION, "host": "127.0.0.1", "port": served.port, "secure": served.ca_bundle is not None},
        "size": "t3.medium",
        "image": "ami-0123456789abcdef0",
        "create_args": {"ex_keyname": "hybrid-rm", "ex_security_groups": ["burst-agents"]},
        "request_timeout_s": 1.5,
        "max_retries": 0,
    }
    if served.ca_bundle:
        settings["ca_bundle"] = served.ca_bundle
    settings.update(overrides)
    return settings


@contextmanager
def start(tmp_path: Path, *, tls: bool = False, **settings_overrides: Any) -> Iterator[CloudUnderTest]:
    from providers.libcloud import PROVIDER

    with serve_ec2(tmp_path, tls=tls) as (app, served):
        settings = settings_for(served, **settings_overrides)
        env = {SECRET_ENV: app.secret}
        provider = PROVIDER(state_dir=tmp_path, cluster="conf")
        spec = PoolSpec(name="burst", cluster="conf", slots=2, settings=settings)
        with patched_env(env):
            try:
                yield CloudUnderTest(name="libcloud", provider=provider, spec=spec, state=app.state,
                                     settings=settings, env=env, base_url=served.base_url)
            finally:
                provider.close()
