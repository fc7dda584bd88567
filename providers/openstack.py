"""The OpenStack provider: a node is a Nova server, found again by its server tags.

Why it looks like this:

- One ``openstack.connect`` connection per pool, built from the pool's ``settings:`` (a
  clouds.yaml cloud, or explicit Keystone credentials whose secret is read from an environment
  variable), with an explicit request timeout and a bounded retry count. Compute is pinned to
  microversion 2.52, the first that accepts ``tags`` when a server is created, so the server
  tag filter of the listing (``GET /servers/detail?tags=...``, 2.26+) finds exactly our VMs.
- The SDK is imported only when a client is built: ``import providers.openstack`` costs
  nothing and works without openstacksdk.
- The create POST is never retried by the SDK (keystoneauth retries a *read* timeout as a
  "connect" failure, which would boot a second server with the same name); instead a launch
  is idempotent: it first looks the node up by name and node tag and reuses what it finds.
- A launch waits for ACTIVE (or ERROR) up to ``build_timeout_s``. A server that ends in ERROR
  is deleted (it must not leak) and reported with the fault Nova gives ("No valid host was
  found" is a capacity problem). A server still building at the deadline is reported launched:
  the manager's ``boot_timeout_s`` takes over from there.
- Throttling (429) is never retried inside the SDK: the controller gets ``retry_after_s`` and
  does its own backoff, instead of an actuator thread sleeping out the Retry-After.
"""

from __future__ import annotations

import base64
import copy
import email.utils
import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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

log = logging.getLogger("providers.openstack")

#: Nova's API schema caps ``user_data`` at 65535 characters of base64: 16383 groups of 3 bytes.
NOVA_USER_DATA_BASE64_MAX = 65535
USER_DATA_LIMIT = (NOVA_USER_DATA_BASE64_MAX // 4) * 3
#: The first compute microversion that accepts ``tags`` in a server create request.
COMPUTE_MICROVERSION = "2.52"
#: What a 429 without a usable Retry-After header asks the controller to wait.
DEFAULT_RETRY_AFTER_S = 10.0
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
INSTALL_HINT = "pip install 'hybrid-rm[openstack]'"

_STATES = {
    "BUILD": CloudState.PENDING,
    "REBUILD": CloudState.PENDING,
    "ACTIVE": CloudState.RUNNING,
    "ERROR": CloudState.FAILED,
    "DELETED": CloudState.TERMINATED,
    "SOFT_DELETED": CloudState.TERMINATED,
    # Powered off, suspended or shelved: the agent cannot run, like a deallocated Azure Spot VM.
    "SHUTOFF": CloudState.STOPPING,
    "STOPPED": CloudState.STOPPING,
    "SUSPENDED": CloudState.STOPPING,
    "PAUSED": CloudState.STOPPING,
    "SHELVED": CloudState.STOPPING,
    "SHELVED_OFFLOADED": CloudState.STOPPING,
}
#: Phrases of a build fault that mean "the cloud has no room for it" rather than a glitch.
_CAPACITY_FAULTS = ("no valid host", "exhausted all hosts", "not enough hosts")


# -- settings ----------------------------------------------------------------------------------
class AuthSettings(BaseModel):
    """Explicit Keystone v3 credentials: a password or an application credential.

    The secret itself never appears here: ``password_env`` / ``application_credential_secret_env``
    name the environment variable of the manager process that holds it. Validation errors do
    not echo input values, in case a secret was pasted where a variable name belongs.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    auth_url: str = Field(pattern=r"^https?://", description="Keystone URL, e.g. https://keystone.example.org:5000/v3")
    username: str | None = Field(None, min_length=1, description="user name (password authentication)")
    password_env: str | None = Field(None, description="name of the environment variable holding the user's password")
    project_name: str | None = Field(None, min_length=1, description="project to scope the token to")
    project_id: str | None = Field(None, min_length=1, description="project id, instead of project_name")
    user_domain_name: str = Field("Default", min_length=1, description="the user's Keystone domain")
    project_domain_name: str = Field("Default", min_length=1, description="the project's Keystone domain")
    application_credential_id: str | None = Field(None, min_length=1, description="application credential id")
    application_credential_secret_env: str | None = Field(
        None, description="name of the environment variable holding the application credential secret"
    )

    @field_validator("password_env", "application_credential_secret_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        # Never echo the value: an admin may have pasted the secret itself here.
        if value is not None and not ENV_NAME.match(value):
            raise ValueError("must be the name of an environment variable (letters, digits and _, e.g. "
                             "OS_PASSWORD) that holds the secret, not the secret itself")
        return value

    @model_validator(mode="after")
    def _one_method(self) -> AuthSettings:
        password = any(v is not None for v in (self.username, self.password_env))
        app_cred = any(v is not None for v in (self.application_credential_id, self.application_credential_secret_env))
        if password == app_cred:
            raise ValueError("auth: give either username + password_env (+ project_name or project_id), or "
                             "application_credential_id + application_credential_secret_env, not both")
        if password:
            if self.username is None or self.password_env is None:
                raise ValueError("auth: password authentication needs both username and password_env")
            if self.project_name is None and self.project_id is None:
                raise ValueError("auth: password authentication needs project_name or project_id")
        elif self.application_credential_id is None or self.application_credential_secret_env is None:
            raise ValueError("auth: an application credential needs both application_credential_id "
                             "and application_credential_secret_env")
        return self

    @property
    def secret_env(self) -> str:
        return self.password_env or self.application_credential_secret_env or ""


class Settings(BaseModel):
    """A pool's ``settings:`` for ``provider: openstack``."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    cloud: str | None = Field(None, min_length=1, description="a cloud name from clouds.yaml (instead of auth)")
    auth: AuthSettings | None = Field(None, description="explicit Keystone credentials (instead of cloud)")
    region_name: str | None = Field(None, min_length=1, description="region of the service catalog to use")
    flavor: str = Field(min_length=1, description="flavor name or id, e.g. m1.large")
    image: str = Field(min_length=1, description="image name or id")
    network: str | None = Field(None, min_length=1, description="network name or id; unset: Nova picks ('auto')")
    key_name: str | None = Field(None, min_length=1, description="SSH key pair to inject")
    security_groups: tuple[str, ...] = Field((), description="security group names or ids")
    availability_zone: str | None = Field(None, min_length=1, description="availability zone to boot in")
    build_timeout_s: float = Field(600.0, gt=0, description="how long a launch waits for ACTIVE or ERROR")
    delete_timeout_s: float = Field(120.0, gt=0, description="how long a terminate waits for the servers to go")
    poll_interval_s: float = Field(2.0, gt=0, le=60, description="how often a launch/terminate polls a server")
    ca_bundle: str | None = Field(None, min_length=1, description="PEM file of the CA that signs the cloud's TLS "
                                                                  "certificates (a private cloud's own CA)")
    request_timeout_s: float = Field(30.0, gt=0, le=600, description="timeout of one API request")
    max_retries: int = Field(2, ge=0, le=10, description="SDK retries of a failed connection or a 503")

    @model_validator(mode="after")
    def _cloud_or_auth(self) -> Settings:
        if (self.cloud is None) == (self.auth is None):
            raise ValueError("set exactly one of 'cloud' (a clouds.yaml cloud name) or 'auth' "
                             "(explicit Keystone credentials)")
        return self


# -- errors ------------------------------------------------------------------------------------
class OpenStackSetupError(RuntimeError):
    """The client cannot be built: missing SDK, missing secret. ``kind`` says who must act."""

    def __init__(self, message: str, kind: LaunchErrorKind = LaunchErrorKind.CONFIG) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Failure:
    kind: LaunchErrorKind
    message: str
    retry_after_s: float | None = None


def _short(text: object, limit: int = 240) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(response: Any) -> float:
    value = response.headers.get("Retry-After") if response is not None else None
    if value:
        try:
            return max(float(value), 0.0)
        except ValueError:
            try:
                return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
            except (TypeError, ValueError):
                pass
    return DEFAULT_RETRY_AFTER_S


def classify(error: BaseException) -> Failure:
    """The launch error class of an SDK / keystoneauth exception, with a short message."""
    if isinstance(error, OpenStackSetupError):
        return Failure(error.kind, str(error))
    from keystoneauth1 import exceptions as ks_exc
    from openstack import exceptions as os_exc

    status, details, response = None, None, None
    if isinstance(error, os_exc.HttpException):
        status, details, response = error.status_code, error.details or error.message, error.response
    elif isinstance(error, ks_exc.HttpError):
        status, details, response = error.http_status, error.message, error.response
    if status is not None:
        text = _short(details or "")
        lowered = text.lower()
        if status in (403, 409, 413) and "quota" in lowered:
            return Failure(LaunchErrorKind.QUOTA, f"quota exceeded (HTTP {status}): {text}")
        if status == 429:
            return Failure(LaunchErrorKind.THROTTLED, f"throttled (HTTP 429): {text}", _retry_after(response))
        if status == 409:
            return Failure(LaunchErrorKind.TRANSIENT, f"conflict (HTTP 409): {text}")
        kind = classify_http_status(status)
        return Failure(kind, f"HTTP {status}: {text}")
    if isinstance(error, ks_exc.SSLError):
        return Failure(LaunchErrorKind.CONFIG, f"TLS error (check ca_bundle): {_short(error)}")
    if isinstance(error, ks_exc.ConnectTimeout):
        return Failure(LaunchErrorKind.TRANSIENT, "no answer within request_timeout_s; a create may still have "
                                                  "happened (the next launch of this node finds it)")
    if isinstance(error, ks_exc.ConnectionError):
        return Failure(LaunchErrorKind.TRANSIENT, f"cannot reach the cloud: {_short(error)}")
    if isinstance(error, (ks_exc.EndpointNotFound, ks_exc.MissingAuthPlugin, ks_exc.auth_plugins.MissingRequiredOptions,
                          os_exc.ConfigException, os_exc.DuplicateResource, os_exc.EndpointNotFound)):
        return Failure(LaunchErrorKind.CONFIG, _short(error))
    if isinstance(error, ks_exc.DiscoveryFailure):
        return Failure(LaunchErrorKind.TRANSIENT, f"service discovery failed: {_short(error)}")
    return Failure(LaunchErrorKind.TRANSIENT, f"{type(error).__name__}: {_short(error)}")


# -- the client --------------------------------------------------------------------------------
def _sdk() -> Any:
    try:
        import openstack
    except ImportError as error:  # pragma: no cover - exercised where the SDK is absent
        raise OpenStackSetupError(f"the OpenStack provider needs openstacksdk: {INSTALL_HINT}") from error
    return openstack


def connect(settings: Settings) -> Any:
    """An ``openstack.connection.Connection`` for these settings (secrets read from the environment)."""
    openstack = _sdk()
    options: dict[str, Any] = {
        "app_name": "hybrid-rm",
        "api_timeout": settings.request_timeout_s,
        "connect_retries": settings.max_retries,
        "status_code_retries": settings.max_retries,
        "retriable_status_codes": [503],  # not 429: the controller backs off with retry_after_s
        "compute_api_version": COMPUTE_MICROVERSION,
    }
    if settings.region_name:
        options["region_name"] = settings.region_name
    if settings.ca_bundle:
        options["cacert"] = settings.ca_bundle
    if settings.cloud is not None:
        return openstack.connect(cloud=settings.cloud, **options)
    auth = settings.auth
    assert auth is not None
    secret = os.environ.get(auth.secret_env)
    if not secret:
        which = "password_env" if auth.password_env else "application_credential_secret_env"
        raise OpenStackSetupError(f"environment variable {auth.secret_env} (auth.{which}) is not set",
                                  LaunchErrorKind.AUTH)
    if auth.password_env:
        auth_type = "v3password"
        credentials = {"username": auth.username, "password": secret, "user_domain_name": auth.user_domain_name}
        if auth.project_id:
            credentials["project_id"] = auth.project_id
        else:
            credentials["project_name"] = auth.project_name
            credentials["project_domain_name"] = auth.project_domain_name
    else:
        auth_type = "v3applicationcredential"
        credentials = {"application_credential_id": auth.application_credential_id,
                       "application_credential_secret": secret}
    credentials["auth_url"] = auth.auth_url
    # Only these settings: no clouds.yaml, no OS_* variables of the manager's environment.
    return openstack.connect(load_yaml_config=False, load_envvars=False, auth_type=auth_type,
                             auth=credentials, identity_api_version="3", **options)


@dataclass
class _PoolClient:
    """One pool's connection, its no-retry compute proxy for creates, and its resolved ids."""

    settings: Settings
    conn: Any
    refs: dict[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    _create_compute: Any = None

    def create_compute(self) -> Any:
        """The compute proxy with SDK retries off: a create is never sent twice by the SDK."""
        with self.lock:
            if self._create_compute is None:
                proxy = copy.copy(self.conn.compute)
                proxy.connect_retries = 0
                proxy.status_code_retries = 0
                self._create_compute = proxy
            return self._create_compute

    def resolve(self) -> dict[str, str]:
        """Flavor, image and network ids from their names or ids (find_* takes either); cached."""
        if self.refs is not None:
            return self.refs
        s, conn = self.settings, self.conn
        from openstack import exceptions as os_exc

        refs: dict[str, str] = {}
        lookups = [("flavor", s.flavor, conn.compute.find_flavor), ("image", s.image, conn.image.find_image)]
        if s.network:
            lookups.append(("network", s.network, conn.network.find_network))
        for what, name, find in lookups:
            try:
                found = find(name, ignore_missing=False)
            except os_exc.NotFoundException as error:
                raise OpenStackSetupError(f"{what} {name!r} not found (settings.{what})") from error
            except os_exc.DuplicateResource as error:
                raise OpenStackSetupError(f"{what} {name!r} is ambiguous: give its id (settings.{what})") from error
            refs[what] = found.id
        self.refs = refs
        return refs


def _tag_strings(tags: dict[str, str]) -> list[str]:
    return [f"{key}={value}" for key, value in tags.items()]


def _tag_dict(server: Any) -> dict[str, str]:
    """Our tags of a server: its ``key=value`` server tags, with its metadata as a fallback."""
    found = dict(server.metadata or {})
    for tag in server.tags or []:
        key, sep, value = tag.partition("=")
        if sep:
            found[key] = value
    return found


def _regex_literal(text: str) -> str:
    """``text`` as a regular expression matching itself (Nova's ``name`` filter is a regex)."""
    return "".join("\\" + ch if ch in ".^$*+?{}[]\\|()" else ch for ch in text)


def _ip(server: Any) -> str | None:
    for addresses in (server.addresses or {}).values():
        for address in addresses:
            if address.get("addr"):
                return address["addr"]
    return None


def _fault_message(server: Any) -> str:
    fault = server.fault or {}
    return _short(fault.get("message") or "the server went to ERROR with no fault given")


# -- the provider ------------------------------------------------------------------------------
class OpenStackProvider(Provider):
    name = "openstack"
    user_data_limit = USER_DATA_LIMIT

    def __init__(self, state_dir: Any, cluster: str) -> None:
        self.state_dir = state_dir
        self.cluster = cluster
        self._clients: dict[tuple[str, Settings], _PoolClient] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenStackProvider(cluster={self.cluster!r}, pools={sorted({k[0] for k in self._clients})})"

    def _client(self, pool: PoolSpec) -> _PoolClient:
        settings = Settings.model_validate(pool.settings)
        key = (pool.name, settings)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = _PoolClient(settings, connect(settings))
            return client

    # -- launch ----------------------------------------------------------------------------
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        results: dict[str, LaunchResult] = {}
        todo = []
        for request in requests:
            size = len(request.user_data.encode("utf-8"))
            if size > USER_DATA_LIMIT:
                results[request.node_id] = self._failed(pool, request.node_id, Failure(LaunchErrorKind.CONFIG, (
                    f"user data too large: {size} bytes, over Nova's limit of {USER_DATA_LIMIT} bytes "
                    f"({NOVA_USER_DATA_BASE64_MAX} once base64-encoded)")))
            else:
                todo.append(request)
        if todo:
            try:
                client = self._client(pool)
                refs = client.resolve()
            except Exception as error:  # noqa: BLE001 - a launch reports every cloud error as a value
                failure = classify(error)
                for request in todo:
                    results[request.node_id] = self._failed(pool, request.node_id, failure)
            else:
                created = {}
                for request in todo:  # create them all first, then wait on all
                    try:
                        created[request.node_id] = self._create(client, pool, refs, request)
                    except Exception as error:  # noqa: BLE001
                        results[request.node_id] = self._failed(pool, request.node_id, classify(error))
                results.update(self._wait_active(client, pool, created))
        return [results[request.node_id] for request in requests]

    def _failed(self, pool: PoolSpec, node_id: str, failure: Failure) -> LaunchResult:
        log.warning("pool=%s node=%s launch failed (%s): %s", pool.name, node_id, failure.kind, failure.message)
        return LaunchResult(node_id, False, error_kind=failure.kind, error=failure.message,
                            retry_after_s=failure.retry_after_s)

    def _find(self, client: _PoolClient, pool: PoolSpec, node_id: str) -> Any | None:
        """Our live server named ``node_id`` in this pool, if the cloud already has it (idempotent launch).

        A server of this node that Nova failed to build is not reused: it is deleted (if no
        delete is under way yet) and a new one is created.
        """
        tags = _tag_strings(tags_for(pool, node_id))
        servers = client.conn.compute.servers(details=True, name=f"^{_regex_literal(node_id)}$", tags=",".join(tags))
        live = None
        for server in servers:
            if server.name != node_id or _tag_dict(server).get(TAG_NODE) != node_id or server.task_state == "deleting":
                continue
            if server.status == "ERROR":
                log.info("pool=%s node=%s deleting server %s left in ERROR: %s",
                         pool.name, node_id, server.id, _fault_message(server))
                client.conn.compute.delete_server(server.id, ignore_missing=True)
            elif live is None:
                live = server
        return live

    def _create(self, client: _PoolClient, pool: PoolSpec, refs: dict[str, str], request: LaunchRequest) -> Any:
        existing = self._find(client, pool, request.node_id)
        if existing is not None:
            log.info("pool=%s node=%s already exists as %s (%s): not creating another",
                     pool.name, request.node_id, existing.id, existing.status)
            return existing
        s = client.settings
        tags = tags_for(pool, request.node_id)
        attrs: dict[str, Any] = {
            "name": request.node_id,
            "flavor_id": refs["flavor"],
            "image_id": refs["image"],
            "networks": [{"uuid": refs["network"]}] if "network" in refs else "auto",
            "metadata": tags,
            "tags": _tag_strings(tags),
        }
        if request.user_data:
            attrs["user_data"] = base64.b64encode(request.user_data.encode("utf-8")).decode("ascii")
        if s.key_name:
            attrs["key_name"] = s.key_name
        if s.security_groups:
            attrs["security_groups"] = [{"name": group} for group in s.security_groups]
        if s.availability_zone:
            attrs["availability_zone"] = s.availability_zone
        server = client.create_compute().create_server(**attrs)
        log.info("pool=%s node=%s created server %s", pool.name, request.node_id, server.id)
        return server

    def _wait_active(self, client: _PoolClient, pool: PoolSpec, created: dict[str, Any]) -> dict[str, LaunchResult]:
        from openstack import exceptions as os_exc

        s, compute = client.settings, client.conn.compute
        deadline = time.monotonic() + s.build_timeout_s
        results = {}
        for node_id, server in created.items():
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                        interval=min(s.poll_interval_s, remaining), wait=remaining)
            except os_exc.ResourceFailure:
                results[node_id] = self._failed_build(client, pool, node_id, server)
                continue
            except os_exc.ResourceTimeout:
                log.info("pool=%s node=%s server %s still building after build_timeout_s=%.0f: reported launched; "
                         "the pool's boot_timeout_s takes over", pool.name, node_id, server.id, s.build_timeout_s)
            except os_exc.NotFoundException:
                results[node_id] = self._failed(pool, node_id, Failure(
                    LaunchErrorKind.TRANSIENT, f"server {server.id} vanished while it was building"))
                continue
            except Exception as error:  # noqa: BLE001 - the server exists: a polling error does not undo that
                log.warning("pool=%s node=%s polling server %s failed (%s): reported launched",
                            pool.name, node_id, server.id, classify(error).message)
            results[node_id] = LaunchResult(node_id, True, provider_ref=server.id)
        return results

    def _failed_build(self, client: _PoolClient, pool: PoolSpec, node_id: str, server: Any) -> LaunchResult:
        """Nova gave up building ``server``: delete it (it must not leak) and say why."""
        reason = _fault_message(server)
        kind = LaunchErrorKind.CAPACITY if any(p in reason.lower() for p in _CAPACITY_FAULTS) \
            else LaunchErrorKind.TRANSIENT
        try:
            client.conn.compute.delete_server(server.id, ignore_missing=True)
        except Exception as error:  # noqa: BLE001 - the listing shows it FAILED; orphan collection retries
            log.warning("pool=%s node=%s deleting errored server %s failed: %s",
                        pool.name, node_id, server.id, classify(error).message)
        return self._failed(pool, node_id, Failure(kind, f"build failed (server {server.id} deleted): {reason}"))

    # -- list ------------------------------------------------------------------------------
    def _ours(self, client: _PoolClient, pool: PoolSpec) -> Iterable[tuple[str, Any]]:
        """(node id, server) of every server carrying this cluster's and pool's tags.

        The tag filter runs server-side; the check here also guards against a cloud that
        ignores an unknown filter (Nova below 2.26 silently does).
        """
        wanted = {TAG_CLUSTER: pool.cluster, TAG_POOL: pool.name}
        servers = client.conn.compute.servers(details=True, tags=",".join(_tag_strings(wanted)))
        for server in servers:
            tags = _tag_dict(server)
            if all(tags.get(k) == v for k, v in wanted.items()):
                yield tags.get(TAG_NODE) or server.name, server

    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        client = self._client(pool)
        nodes = []
        for node_id, server in self._ours(client, pool):
            if server.task_state == "deleting":
                state = CloudState.STOPPING
            else:
                state = _STATES.get((server.status or "").upper(), CloudState.UNKNOWN)
            flavor = server.flavor
            extra: dict[str, Any] = {
                "status": server.status,
                "flavor": getattr(flavor, "original_name", None) or getattr(flavor, "name", None)
                or getattr(flavor, "id", None),
                "ip": _ip(server),
                "availability_zone": server.availability_zone,
                "created": server.created_at,
            }
            if server.task_state:
                extra["task_state"] = server.task_state
            if state == CloudState.FAILED:
                extra["fault"] = _fault_message(server)
            nodes.append(CloudNode(node_id=node_id, pool=pool.name, provider_ref=server.id, state=state, extra=extra))
        return nodes

    # -- terminate -------------------------------------------------------------------------
    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        if not node_ids:
            return
        from openstack import exceptions as os_exc

        client = self._client(pool)
        wanted = set(node_ids)
        doomed = [(node_id, server) for node_id, server in self._ours(client, pool) if node_id in wanted]
        compute = client.conn.compute
        errors: list[tuple[str, BaseException]] = []
        deleting = []
        for node_id, server in doomed:
            try:
                compute.delete_server(server, ignore_missing=True)
                deleting.append((node_id, server))
            except Exception as error:  # noqa: BLE001 - try the others, raise at the end
                log.warning("pool=%s node=%s deleting server %s failed: %s",
                            pool.name, node_id, server.id, classify(error).message)
                errors.append((node_id, error))
        s = client.settings
        deadline = time.monotonic() + s.delete_timeout_s
        for node_id, server in deleting:
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                compute.wait_for_delete(server, interval=min(s.poll_interval_s, remaining), wait=remaining)
            except os_exc.ResourceTimeout as error:
                log.warning("pool=%s node=%s server %s still there after delete_timeout_s=%.0f",
                            pool.name, node_id, server.id, s.delete_timeout_s)
                errors.append((node_id, error))
            except Exception as error:  # noqa: BLE001
                log.warning("pool=%s node=%s waiting for server %s to go failed: %s",
                            pool.name, node_id, server.id, classify(error).message)
                errors.append((node_id, error))
        if errors:
            failed = ", ".join(node_id for node_id, _ in errors)
            raise RuntimeError(f"openstack pool {pool.name}: terminate failed for {failed}: "
                               f"{classify(errors[0][1]).message}") from errors[0][1]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.conn.close()
            except Exception as error:  # noqa: BLE001
                log.warning("closing an OpenStack connection failed: %s", error)


PROVIDER = OpenStackProvider
