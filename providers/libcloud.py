"""The Apache Libcloud provider: any Libcloud compute driver (EC2, OpenStack, GCE, ...) by name.

Why a generic driver: Libcloud reaches ~50 clouds through one API, so a site whose cloud has
no native driver here still bursts to it. What differs between drivers is read once from the
driver's own ``create_node`` signature (which argument carries our tags, which the cloud-init,
whether it takes an idempotency token), with a small table for the few drivers whose arguments
have other names (GCE labels and metadata ``user-data``, Azure ARM ``ex_tags``).

How our VMs are found again: the VM name is the node id and the VM carries the tags of
``tags_for`` (EC2 instance tags, OpenStack server metadata, GCE labels, Azure tags). EC2 is
filtered server-side (``tag:`` filters); other drivers list everything and filter here. A
driver that cannot tag at all is refused unless the admin sets ``match_by_name`` (then a VM is
ours when its name starts with ``<pool>-``; safe only if no other cluster shares the account).

Why one driver per pool *and thread*: a Libcloud driver keeps per-request state on its
connection (context, last action, one requests session) and is not thread-safe, while the
actuator runs up to four operations of one pool at once. Building a driver makes no API call.

Per-pool transport settings, applied to every connection the driver opens (OpenStack opens
one per service plus Keystone's): ``request_timeout_s`` (the requests timeout), ``max_retries``
(our own bounded retry of transient errors: 5xx, refused connections; never a read timeout,
never a throttle, and never a create on a driver without an idempotency token: a retried
create could make a second VM), and ``ca_bundle``, pinned on each connection rather than
through the process-wide ``libcloud.security.CA_CERTS_PATH``, so two pools with different CAs
can coexist. Libcloud's own retry (env ``LIBCLOUD_RETRY_FAILED_HTTP_REQUESTS``) stays off.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from providers.base import (
    TAG_CLUSTER,
    TAG_NODE,
    TAG_POOL,
    CloudNode,
    CloudState,
    LaunchErrorKind,
    LaunchRequest,
    LaunchResult,
    PoolSpec,
    Provider,
    classify_http_status,
    tags_for,
)

log = logging.getLogger("providers.libcloud")

INSTALL_HINT = "pip install 'hybrid-rm[libcloud]'"
DEFAULT_THROTTLE_S = 30.0  # EC2 throttles with 503 RequestLimitExceeded and no Retry-After
RETRY_BASE_S = 0.5
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_SECRETISH = re.compile(r"secret|passw|(^|_)pass($|_)|token|api_?key|access_?key|private_?key|credential",
                        re.IGNORECASE)
#: Arguments hybrid-rm sets itself; an admin's create_args may not override them.
_RESERVED_CREATE_ARGS = frozenset({
    "name", "size", "image", "location", "auth", "ex_userdata", "ex_user_data", "ex_customdata",
    "ex_custom_data", "cloud_init", "ex_metadata", "ex_tags", "ex_labels", "ex_clienttoken",
    "ex_client_token", "ex_mincount", "ex_maxcount",
})
_RESERVED_DRIVER_ARGS = frozenset({"key", "secret", "timeout", "retry_delay", "backoff"})


class Settings(BaseModel):
    """A Libcloud pool's ``settings:`` block. Secrets never appear here, only env var names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    driver: str = Field(description="Libcloud compute provider, the value of a libcloud.compute.types.Provider "
                                    "constant: ec2, openstack, gce, azure_arm, ...")
    key: str = Field(min_length=1, description="the driver's first credential, not a secret: access key id (ec2), "
                                               "user name (openstack), service account email (gce), client id "
                                               "(azure_arm)")
    secret_env: str | None = Field(None, pattern=ENV_NAME,
                                   description="environment variable holding the secret (secret access key, "
                                               "password) passed to the driver after `key`")
    secret_args_env: dict[str, str] = Field(default_factory=dict,
                                            description="further secret driver arguments, by argument name -> "
                                                        "environment variable name (e.g. ex_force_auth_token)")
    driver_args: dict[str, Any] = Field(default_factory=dict,
                                        description="driver constructor arguments: region, host, port, secure, "
                                                    "ex_force_auth_url, ex_tenant_name, project, ...")
    size: str = Field(min_length=1, description="size / flavor / instance type id (e.g. m5.large)")
    image: str = Field(min_length=1, description="image id (e.g. ami-0abc..., a Glance image UUID)")
    location: str | None = Field(None, description="location / availability zone name, if the driver takes one")
    create_args: dict[str, Any] = Field(default_factory=dict,
                                        description="extra create_node arguments: ex_keyname, ex_security_groups, "
                                                    "ex_subnet, networks, ...")
    ca_bundle: str | None = Field(None, description="PEM file of the CA(s) the cloud's TLS certificate chains to "
                                                    "(private OpenStack, test clouds); pinned on this pool's "
                                                    "connections only")
    request_timeout_s: float = Field(30.0, gt=0, le=600, description="timeout of each HTTP request to the cloud")
    max_retries: int = Field(2, ge=0, le=10, description="retries of a transient failure (5xx, refused "
                                                         "connection) inside one call; the controller backs off too")
    match_by_name: bool = Field(False, description="for drivers that cannot tag VMs: treat VMs named "
                                                   "'<pool>-...' as this pool's (only safe when no other cluster "
                                                   "uses this account with the same pool name)")

    @field_validator("driver")
    @classmethod
    def _driver_known(cls, driver: str) -> str:
        driver = driver.strip().lower()
        known = _known_drivers()
        if known is not None and driver not in known:
            raise ValueError(f"unknown libcloud compute driver {driver!r}; known: {', '.join(sorted(known))}")
        return driver

    @field_validator("driver_args")
    @classmethod
    def _driver_args_not_secret(cls, args: dict[str, Any]) -> dict[str, Any]:
        for name in args:
            if name in _RESERVED_DRIVER_ARGS:
                raise ValueError(f"{name!r} is set by hybrid-rm (key, secret_env, request_timeout_s, max_retries)")
            if _SECRETISH.search(name):
                raise ValueError(f"{name!r} looks like a secret: name its environment variable in secret_args_env")
        return args

    @field_validator("secret_args_env")
    @classmethod
    def _env_names(cls, mapping: dict[str, str]) -> dict[str, str]:
        for arg, env in mapping.items():
            if arg in _RESERVED_DRIVER_ARGS:
                raise ValueError(f"{arg!r} is set by hybrid-rm; use secret_env for the driver's secret")
            if not re.match(ENV_NAME, env):
                raise ValueError(f"{env!r} (for {arg}) is not an environment variable name")
        return mapping

    @field_validator("create_args")
    @classmethod
    def _create_args_allowed(cls, args: dict[str, Any]) -> dict[str, Any]:
        for name in args:
            if name in _RESERVED_CREATE_ARGS:
                raise ValueError(f"{name!r} is set by hybrid-rm (node name, size, image, location, tags, "
                                 "user data, idempotency token)")
            if _SECRETISH.search(name):
                raise ValueError(f"{name!r} looks like a secret and may not be written in the config")
        return args

    @field_validator("ca_bundle")
    @classmethod
    def _ca_bundle_exists(cls, path: str | None) -> str | None:
        if path is not None and not Path(path).is_file():
            raise ValueError(f"CA bundle {path!r} is not a file")
        return path


def _known_drivers() -> frozenset[str] | None:
    """Libcloud's compute driver names, or None when Libcloud is not installed (checked at first use)."""
    try:
        from libcloud.compute.providers import DRIVERS
    except ImportError:
        return None
    return frozenset(str(name) for name in DRIVERS)


class LibcloudCallError(RuntimeError):
    """A cloud call that failed, with its error class; the message never holds a secret."""

    def __init__(self, kind: LaunchErrorKind, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


# -- what a driver can do ------------------------------------------------------------------
#: Drivers whose tag/cloud-init arguments are not the common ex_metadata/ex_userdata.
_TAGS_ARG = {"gce": "ex_labels", "azure_arm": "ex_tags", "scaleway": None}
_USERDATA_ARG = {"gce": "ex_metadata:user-data", "outscale": "ex_user_data", "equinixmetal": "cloud_init"}
_TOKEN_ARGS = ("ex_clienttoken", "ex_client_token")
#: Drivers whose constructor starts with other arguments (tenant_id, subscription_id: in driver_args).
_CREDENTIALS_BY_NAME = {"azure_arm": ("key", "secret")}


@dataclass(frozen=True)
class Capabilities:
    tags_arg: str | None  # create_node argument carrying our tags (a dict)
    userdata_arg: str | None  # "arg" or "arg:key" (the text goes in a dict under key)
    token_arg: str | None  # idempotency token argument (EC2 ClientToken)
    params: frozenset[str]  # create_node's named parameters
    any_kwargs: bool  # create_node takes **kwargs
    server_filter: bool  # list_nodes(ex_filters={"tag:K": v}) filters on the server (EC2 family)


@functools.lru_cache(maxsize=64)
def capabilities(driver_name: str, driver_type: type) -> Capabilities:
    """Read once per driver class from its own signatures (OpenStack's factory picks the class)."""
    create = inspect.signature(driver_type.create_node).parameters
    params = frozenset(n for n, p in create.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    any_kwargs = any(p.kind == p.VAR_KEYWORD for p in create.values())
    tags_arg = _TAGS_ARG.get(driver_name, "ex_metadata")
    userdata_arg = _USERDATA_ARG.get(driver_name, "ex_userdata")
    listing = inspect.signature(driver_type.list_nodes).parameters
    return Capabilities(
        tags_arg=tags_arg if tags_arg in params else None,
        userdata_arg=userdata_arg if userdata_arg and userdata_arg.split(":")[0] in params else None,
        token_arg=next((t for t in _TOKEN_ARGS if t in params), None),
        params=params,
        any_kwargs=any_kwargs,
        server_filter="ex_filters" in listing and driver_type.__module__ == "libcloud.compute.drivers.ec2",
    )


# -- one driver, hardened ------------------------------------------------------------------
@dataclass
class _Client:
    settings: Settings
    driver: Any
    caps: Capabilities
    create_kwargs: dict[str, Any]  # size, image, location and the admin's create_args, as driver objects
    connections: list[Any]
    secrets: tuple[str, ...]  # scrubbed from every message
    retry_enabled: bool = True


def _build_client(pool: PoolSpec, settings: Settings) -> _Client:
    try:
        from libcloud.compute.providers import get_driver
    except ImportError as error:
        raise LibcloudCallError(LaunchErrorKind.CONFIG, f"Apache Libcloud is not installed: {INSTALL_HINT}") from error
    try:
        driver_cls = get_driver(settings.driver)
    except Exception as error:  # unknown or deprecated name, or a driver module that fails to import
        raise LibcloudCallError(LaunchErrorKind.CONFIG, f"libcloud driver {settings.driver!r}: {error}") from None
    secrets, args, kwargs = [], [settings.key], dict(settings.driver_args)
    if settings.secret_env:
        args.append(_env_secret(settings.secret_env, "secret_env"))
        secrets.append(args[-1])
    if settings.driver in _CREDENTIALS_BY_NAME:  # its first arguments are not (key, secret)
        kwargs.update(zip(_CREDENTIALS_BY_NAME[settings.driver], args))
        args = []
    for arg, env in settings.secret_args_env.items():
        kwargs[arg] = _env_secret(env, f"secret_args_env.{arg}")
        secrets.append(kwargs[arg])
    if settings.driver == "ec2":  # SigV4 signs in a header; SigV2 (Libcloud's default in some regions) in the URL
        kwargs.setdefault("signature_version", "4")
    init = inspect.signature(driver_cls.__init__).parameters
    if "timeout" in init or any(p.kind == p.VAR_KEYWORD for p in init.values()):
        kwargs["timeout"] = settings.request_timeout_s
    try:
        driver = driver_cls(*args, **kwargs)
    except Exception as error:
        raise LibcloudCallError(LaunchErrorKind.CONFIG,
                                f"cannot set up libcloud driver {settings.driver!r}: {_scrub(str(error), secrets)}") from None
    client = _Client(settings, driver, capabilities(settings.driver, type(driver)), {}, _connections(driver), tuple(secrets))
    for connection in client.connections:
        _harden(connection, client)
    client.create_kwargs = _create_kwargs(client)
    return client


def _env_secret(env: str, field: str) -> str:
    value = os.environ.get(env)
    if not value:
        raise LibcloudCallError(LaunchErrorKind.AUTH, f"environment variable {env} (settings.{field}) is not set")
    return value


def _connections(driver: Any) -> list[Any]:
    """Every Libcloud connection the driver holds, plus OpenStack's Keystone connection."""
    from libcloud.common.base import Connection

    found = [value for value in vars(driver).values() if isinstance(value, Connection)]
    for connection in list(found):
        if hasattr(connection, "get_auth_class"):
            try:
                found.append(connection.get_auth_class())
            except Exception:  # no auth URL: the driver reports it on first use
                pass
    return list({id(c): c for c in found}.values())


def _harden(connection: Any, client: _Client) -> None:
    """Per-connection timeout, CA bundle and bounded retries (no process-wide Libcloud state)."""
    settings = client.settings
    connection.timeout = settings.request_timeout_s
    if settings.ca_bundle:
        connection.conn_class = _pinned_ca_class(connection.conn_class, settings.ca_bundle)
    http = getattr(connection, "connection", None)
    if http is not None:
        if getattr(http, "session", None) is not None:
            http.session.timeout = settings.request_timeout_s
        if settings.ca_bundle:
            http.ca_cert = settings.ca_bundle
    original = connection._retryable_request

    def request_with_retries(**kwargs: Any) -> Any:
        attempt = 0
        while True:
            try:
                return original(**kwargs)
            except Exception as error:
                if attempt >= settings.max_retries or not client.retry_enabled or not _retryable(error):
                    raise
                attempt += 1
                time.sleep(min(RETRY_BASE_S * 2 ** (attempt - 1), 5.0))

    connection._retryable_request = request_with_retries


_PINNED: dict[tuple[type, str], type] = {}


def _pinned_ca_class(base: type, ca_bundle: str) -> type:
    """A LibcloudConnection class that trusts ``ca_bundle`` whatever CA_CERTS_PATH says."""
    if (base, ca_bundle) not in _PINNED:
        def _setup_ca_cert(self: Any, **_kwargs: Any) -> None:
            self.ca_cert = ca_bundle

        _PINNED[(base, ca_bundle)] = type(f"Pinned{base.__name__}", (base,), {"_setup_ca_cert": _setup_ca_cert})
    return _PINNED[(base, ca_bundle)]


def _create_kwargs(client: _Client) -> dict[str, Any]:
    """size, image, location and create_args as the driver wants them, built without an API call."""
    from libcloud.compute.base import NodeImage, NodeLocation, NodeSize

    settings, driver, caps = client.settings, client.driver, client.caps
    for name in settings.create_args:
        if name not in caps.params and not caps.any_kwargs:
            raise LibcloudCallError(LaunchErrorKind.CONFIG,
                                    f"settings.create_args.{name}: {settings.driver} create_node() takes no such "
                                    f"argument; it takes {', '.join(sorted(caps.params - {'self'}))}")
    if settings.driver == "gce":  # GCE resolves names itself (with API calls) and wants its own objects
        kwargs: dict[str, Any] = {"size": settings.size, "image": settings.image}
        if settings.location:
            kwargs["location"] = settings.location
    else:
        kwargs = {"size": NodeSize(id=settings.size, name=settings.size, ram=None, disk=None, bandwidth=None,
                                   price=None, driver=driver),
                  "image": NodeImage(id=settings.image, name=None, driver=driver)}
        if settings.location:
            if "location" not in caps.params:
                raise LibcloudCallError(LaunchErrorKind.CONFIG,
                                        f"settings.location: {settings.driver} create_node() takes no location; "
                                        "use create_args (e.g. ex_availability_zone)")
            kwargs["location"] = _location(driver, settings.location, NodeLocation)
    ec2 = type(driver).__module__ == "libcloud.compute.drivers.ec2"
    for name, value in settings.create_args.items():
        if name == "ex_subnet" and isinstance(value, str):
            value = _Ref(value)
        elif name == "networks" or (name == "ex_security_groups" and not ec2):
            value = [_Ref(v) if isinstance(v, str) else v for v in value]
        kwargs[name] = value
    return kwargs


class _Ref(SimpleNamespace):
    """A network / subnet / security group given by id or name: all create_node reads of it."""

    def __init__(self, ref: str) -> None:
        super().__init__(id=ref, name=ref)


def _location(driver: Any, name: str, node_location: type) -> Any:
    if type(driver).__module__ == "libcloud.compute.drivers.ec2":  # an availability zone of the driver's region
        from libcloud.compute.drivers.ec2 import EC2NodeLocation, ExEC2AvailabilityZone

        zone = ExEC2AvailabilityZone(name=name, zone_state="available", region_name=driver.region_name)
        return EC2NodeLocation(id=name, name=name, country=driver.country, driver=driver, availability_zone=zone)
    return node_location(id=name, name=name, country="", driver=driver)


# -- errors --------------------------------------------------------------------------------
#: Cloud error codes (EC2's <Code>, also found in other clouds' bodies) and their class.
_CODES = {
    LaunchErrorKind.THROTTLED: ("RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequests",
                                "rateLimitExceeded"),
    LaunchErrorKind.QUOTA: ("InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
                            "ResourceLimitExceeded", "VolumeLimitExceeded", "AddressLimitExceeded", "QuotaExceeded",
                            "QUOTA_EXCEEDED", "OperationNotAllowed"),
    LaunchErrorKind.CAPACITY: ("InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
                               "InsufficientReservedInstanceCapacity", "ZONE_RESOURCE_POOL_EXHAUSTED",
                               "SkuNotAvailable", "AllocationFailed"),
    LaunchErrorKind.AUTH: ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                           "OptInRequired", "Blocked", "AuthorizationFailed"),
    LaunchErrorKind.CONFIG: ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable",
                             "InvalidParameterValue", "InvalidParameterCombination", "InvalidParameter",
                             "MissingParameter", "InvalidSubnetID.NotFound", "InvalidGroup.NotFound",
                             "InvalidKeyPair.NotFound", "InvalidInstanceType", "Unsupported",
                             "IdempotentParameterMismatch", "InvalidBlockDeviceMapping"),
    LaunchErrorKind.TRANSIENT: ("InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable"),
}
_CODE_KIND = {code: kind for kind, codes in _CODES.items() for code in codes}
#: Phrases of clouds that answer in prose (OpenStack's JSON faults), lower case.
_PHRASES = (("quota exceeded", LaunchErrorKind.QUOTA), ("exceeds quota", LaunchErrorKind.QUOTA),
            ("no valid host", LaunchErrorKind.CAPACITY), ("insufficient capacity", LaunchErrorKind.CAPACITY),
            ("rate limit", LaunchErrorKind.THROTTLED), ("did not complete", LaunchErrorKind.TRANSIENT))
_CODE_LINE = re.compile(r"^\s*([A-Za-z][\w.]*): ", re.MULTILINE)
_NOT_FOUND_CODES = ("InvalidInstanceID.NotFound",)


def classify(error: BaseException, secrets: Sequence[str] = ()) -> LibcloudCallError:
    """The error class, a short message and Retry-After of anything a driver call raised."""
    if isinstance(error, LibcloudCallError):
        return error
    import requests
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
    from libcloud.common.types import (
        InvalidCredsError,
        LibcloudError,
        MalformedResponseError,
        ProviderError,
    )

    status, text, headers = None, "", {}
    if isinstance(error, requests.exceptions.SSLError):
        return LibcloudCallError(LaunchErrorKind.CONFIG,
                                 f"TLS verification failed talking to {_host(error)}: check ca_bundle")
    if isinstance(error, (requests.exceptions.Timeout, TimeoutError)):
        return LibcloudCallError(LaunchErrorKind.TRANSIENT, f"timed out talking to {_host(error)}")
    if isinstance(error, (requests.exceptions.ConnectionError, ConnectionError)):
        return LibcloudCallError(LaunchErrorKind.TRANSIENT, f"cannot connect to {_host(error)}")
    if isinstance(error, RateLimitReachedError):
        return LibcloudCallError(LaunchErrorKind.THROTTLED, "HTTP 429: rate limit exceeded",
                                 error.retry_after or DEFAULT_THROTTLE_S)
    if isinstance(error, InvalidCredsError):
        return LibcloudCallError(LaunchErrorKind.AUTH, _short(f"credentials refused: {error.value}", secrets))
    if isinstance(error, BaseHTTPError):
        status, text, headers = error.code, str(error.message), error.headers or {}
    elif isinstance(error, ProviderError):
        status, text = error.http_code, str(error.value)
    elif isinstance(error, MalformedResponseError):
        return LibcloudCallError(LaunchErrorKind.TRANSIENT, _short(f"malformed cloud response: {error.value}", secrets))
    elif isinstance(error, LibcloudError):
        text = str(error.value)
    elif isinstance(error, (TypeError, ValueError, AttributeError, KeyError)):
        return LibcloudCallError(LaunchErrorKind.CONFIG, _short(f"{type(error).__name__}: {error}", secrets))
    else:
        text = f"{type(error).__name__}: {error}"
    kind = _kind_of(text)
    if kind is None:
        kind = classify_http_status(status) if status is not None else (
            LaunchErrorKind.CONFIG if isinstance(error, LibcloudError) else LaunchErrorKind.TRANSIENT)
    retry_after = None
    if kind == LaunchErrorKind.THROTTLED:
        retry_after = _retry_after(headers) or DEFAULT_THROTTLE_S
    prefix = f"HTTP {status}: " if status is not None else ""
    return LibcloudCallError(kind, _short(prefix + text, secrets), retry_after)


def _kind_of(text: str) -> LaunchErrorKind | None:
    for code in _CODE_LINE.findall(text):
        if code in _CODE_KIND:
            return _CODE_KIND[code]
    lowered = text.lower()
    for code, kind in _CODE_KIND.items():  # codes inside a JSON body
        if f'"{code.lower()}"' in lowered:
            return kind
    return next((kind for phrase, kind in _PHRASES if phrase in lowered), None)


def _retry_after(headers: dict[str, Any]) -> float | None:
    value = {str(k).lower(): v for k, v in headers.items()}.get("retry-after")
    try:
        return float(value) if value is not None and float(value) > 0 else None
    except ValueError:
        return None


def _retryable(error: BaseException) -> bool:
    import requests

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True  # never sent
    if isinstance(error, (requests.exceptions.Timeout, TimeoutError, requests.exceptions.SSLError)):
        return False  # a read timeout may have been acted on; TLS errors do not heal
    return classify(error).kind == LaunchErrorKind.TRANSIENT


def _host(error: BaseException) -> str:
    request = getattr(error, "request", None)
    url = getattr(request, "url", None) or ""
    match = re.match(r"^\w+://([^/?#]+)", url)
    return match.group(1) if match else "the cloud"


def _scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(Signature|X-Amz-Signature|X-Amz-Credential|AWSAccessKeyId)=[^&\s]+", r"\1=***", text)


def _short(text: str, secrets: Sequence[str] = ()) -> str:
    text = " ".join(_scrub(text, secrets).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _not_found(error: BaseException) -> bool:
    from libcloud.common.exceptions import BaseHTTPError
    from libcloud.common.types import ProviderError

    if isinstance(error, BaseHTTPError):
        return error.code == 404 or any(code in str(error.message) for code in _NOT_FOUND_CODES)
    return isinstance(error, ProviderError) and error.http_code == 404


# -- states and tags -----------------------------------------------------------------------
_STATES = {
    "pending": CloudState.PENDING, "starting": CloudState.PENDING, "rebooting": CloudState.RUNNING,
    "running": CloudState.RUNNING, "reconfiguring": CloudState.RUNNING, "stopping": CloudState.STOPPING,
    "stopped": CloudState.STOPPING, "suspended": CloudState.STOPPING, "paused": CloudState.STOPPING,
    "terminated": CloudState.TERMINATED, "error": CloudState.FAILED, "unknown": CloudState.UNKNOWN,
}
#: EC2 states Libcloud folds into UNKNOWN ("shutting-down") or STOPPED, from node.extra["status"].
_EC2_STATES = {"shutting-down": CloudState.STOPPING, "stopping": CloudState.STOPPING,
               "terminated": CloudState.TERMINATED}


def _state(node: Any) -> CloudState:
    status = node.extra.get("status") if isinstance(node.extra, dict) else None
    if isinstance(status, str) and status in _EC2_STATES:
        return _EC2_STATES[status]
    return _STATES.get(str(node.state), CloudState.UNKNOWN)


def _tags(node: Any) -> dict[str, str]:
    """EC2/Azure ``tags``, GCE ``labels``, OpenStack ``metadata``: whichever the driver fills."""
    tags: dict[str, str] = {}
    for key in ("metadata", "labels", "tags"):
        value = node.extra.get(key) if isinstance(node.extra, dict) else None
        if isinstance(value, dict):
            tags.update({str(k): v for k, v in value.items() if isinstance(v, str)})
    return tags


def _extra(node: Any) -> dict[str, Any]:
    """A few useful, non-secret fields (never the whole driver extra: OpenStack's holds adminPass)."""
    extra = node.extra if isinstance(node.extra, dict) else {}
    size = extra.get("instance_type") or extra.get("flavorId") or extra.get("machineType") or getattr(
        getattr(node, "size", None), "id", None)
    ips = list(node.public_ips or []) + list(node.private_ips or [])
    out = {"name": node.name, "size": size, "image": extra.get("image_id") or extra.get("imageId"),
           "ip": ips[0] if ips else None, "private_ip": (node.private_ips or [None])[0],
           "zone": extra.get("availability") or extra.get("availability_zone"),
           "spot": extra.get("instance_lifecycle") == "spot", "status": extra.get("status")}
    return {k: v for k, v in out.items() if v is not None}


def client_token(pool: PoolSpec, node_id: str) -> str:
    """EC2 ClientToken (<= 64 ASCII): RunInstances with a seen token returns the first instance."""
    return "hrm-" + hashlib.sha256(f"{pool.cluster}/{pool.name}/{node_id}".encode()).hexdigest()[:40]


# -- the provider --------------------------------------------------------------------------
class LibcloudProvider(Provider):
    name = "libcloud"
    #: EC2's limit (16 KiB before base64), the smallest of the clouds Libcloud is used for here.
    user_data_limit = 16 * 1024

    def __init__(self, state_dir: str | Path, cluster: str) -> None:
        self.cluster = cluster
        self._clients: dict[tuple[str, str, int], _Client] = {}
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"LibcloudProvider(cluster={self.cluster!r}, pools={sorted({k[0] for k in self._clients})})"

    def _client(self, pool: PoolSpec) -> _Client:
        key = (pool.name, repr(sorted(pool.settings.items())), threading.get_ident())
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            return client
        try:
            settings = Settings.model_validate(pool.settings)
        except ValidationError as error:  # the message names fields, never values (one might be a secret)
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise LibcloudCallError(LaunchErrorKind.CONFIG, f"pool {pool.name}: invalid libcloud settings: {fields}") \
                from None
        client = _build_client(pool, settings)
        self._check_capabilities(pool, client)
        with self._lock:
            self._clients[key] = client
        return client

    def _check_capabilities(self, pool: PoolSpec, client: _Client) -> None:
        caps, driver = client.caps, client.settings.driver
        if caps.tags_arg is None and not client.settings.match_by_name:
            raise LibcloudCallError(LaunchErrorKind.CONFIG,
                                    f"pool {pool.name}: libcloud driver {driver!r} cannot tag VMs, so this pool's VMs "
                                    "cannot be told from others; set match_by_name: true if no other cluster uses "
                                    "this account with the same pool name")
        if caps.tags_arg is None:
            self._warn_once(pool, f"driver {driver!r} cannot tag VMs: pool VMs are matched by the name prefix "
                                  f"'{pool.name}-' only")
        if caps.userdata_arg is None:
            self._warn_once(pool, f"driver {driver!r} takes no user data: VMs get no cloud-init, so the agent must "
                                  "be baked into the image")

    def _warn_once(self, pool: PoolSpec, message: str) -> None:
        with self._lock:
            if (pool.name, message) in self._warned:
                return
            self._warned.add((pool.name, message))
        log.warning("pool=%s %s", pool.name, message)

    def _ours(self, client: _Client, pool: PoolSpec) -> list[tuple[str, Any]]:
        """(node id, libcloud node) of this cluster's VMs in ``pool``."""
        if client.caps.server_filter:
            nodes = client.driver.list_nodes(ex_filters={f"tag:{TAG_CLUSTER}": pool.cluster,
                                                         f"tag:{TAG_POOL}": pool.name})
        else:
            nodes = client.driver.list_nodes()
        ours = []
        for node in nodes:
            if client.caps.tags_arg is None:
                if str(node.name).startswith(f"{pool.name}-"):
                    ours.append((str(node.name), node))
                continue
            tags = _tags(node)
            if tags.get(TAG_CLUSTER) == pool.cluster and tags.get(TAG_POOL) == pool.name:
                ours.append((tags.get(TAG_NODE) or str(node.name), node))
        return ours

    # -- the interface ---------------------------------------------------------------------
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        results: list[LaunchResult | None] = [None] * len(requests)
        for i, request in enumerate(requests):
            size = len(request.user_data.encode())
            if self.user_data_limit is not None and size > self.user_data_limit:
                results[i] = self._failed(pool, request.node_id, LibcloudCallError(
                    LaunchErrorKind.CONFIG, f"user data is {size} bytes; the limit is {self.user_data_limit}"))
        todo = [i for i, result in enumerate(results) if result is None]
        if not todo:
            return [r for r in results if r is not None]
        client = None
        try:
            client = self._client(pool)
            existing = {node_id: node for node_id, node in self._ours(client, pool)
                        if _state(node) != CloudState.TERMINATED}
        except Exception as error:
            failure = classify(error, client.secrets if client is not None else ())
            for i in todo:
                results[i] = self._failed(pool, requests[i].node_id, failure)
            return [r for r in results if r is not None]
        for i in todo:
            results[i] = self._launch_one(client, pool, requests[i], existing.get(requests[i].node_id))
        return [r for r in results if r is not None]

    def _launch_one(self, client: _Client, pool: PoolSpec, request: LaunchRequest, existing: Any) -> LaunchResult:
        node_id = request.node_id
        if existing is not None:
            if _state(existing) == CloudState.FAILED:
                return self._failed(pool, node_id, LibcloudCallError(
                    LaunchErrorKind.CAPACITY, f"VM {existing.id} exists but the cloud failed to build it"))
            return LaunchResult(node_id, True, provider_ref=str(existing.id))
        caps = client.caps
        kwargs = dict(client.create_kwargs, name=node_id)
        if caps.tags_arg:
            kwargs[caps.tags_arg] = tags_for(pool, node_id)
        if request.user_data and caps.userdata_arg:
            arg, _, key = caps.userdata_arg.partition(":")
            kwargs[arg] = {key: request.user_data} if key else request.user_data
        if caps.token_arg:
            kwargs[caps.token_arg] = client_token(pool, node_id)
        client.retry_enabled = caps.token_arg is not None  # a create is retried only when idempotent
        try:
            node = client.driver.create_node(**kwargs)
        except Exception as error:
            return self._failed(pool, node_id, classify(error, client.secrets))
        finally:
            client.retry_enabled = True
        node = node[0] if isinstance(node, list) else node
        return LaunchResult(node_id, True, provider_ref=str(node.id))

    def _failed(self, pool: PoolSpec, node_id: str, failure: LibcloudCallError) -> LaunchResult:
        log.warning("pool=%s node=%s launch failed (%s): %s", pool.name, node_id, failure.kind.value, failure)
        return LaunchResult(node_id, False, error_kind=failure.kind, error=str(failure),
                            retry_after_s=failure.retry_after_s)

    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        client = self._client(pool)
        try:
            ours = self._ours(client, pool)
        except Exception as error:
            raise classify(error, client.secrets) from None
        return [CloudNode(node_id=node_id, pool=pool.name, provider_ref=str(node.id), state=_state(node),
                          extra=_extra(node)) for node_id, node in ours]

    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        wanted = set(node_ids)
        if not wanted:
            return
        client = self._client(pool)
        try:
            ours = self._ours(client, pool)
        except Exception as error:
            raise classify(error, client.secrets) from None
        failures: list[tuple[str, LibcloudCallError]] = []
        for node_id, node in ours:  # one failure does not keep the others alive
            if node_id not in wanted or _state(node) == CloudState.TERMINATED:
                continue
            try:
                client.driver.destroy_node(node)
            except Exception as error:
                if not _not_found(error):  # already gone: done
                    failures.append((f"{node_id} ({node.id})", classify(error, client.secrets)))
        if failures:
            message = "; ".join(f"{what}: {failure}" for what, failure in failures)
            raise LibcloudCallError(failures[0][1].kind, f"pool {pool.name}: terminate failed for {message}",
                                    failures[0][1].retry_after_s)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            for connection in client.connections:
                session = getattr(getattr(connection, "connection", None), "session", None)
                if session is not None:
                    session.close()


PROVIDER = LibcloudProvider
