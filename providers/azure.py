"""The Azure driver: one Linux VM per node, created with ``azure-mgmt-compute`` through ARM.

Why these choices:

* **Self-contained VMs.** The NIC is declared inline in the VM's ``network_profile`` (and both NIC
  and OS disk carry ``deleteOption: Delete``), so one ARM PUT creates everything a node needs and
  one DELETE removes it all: no orphaned NICs or disks to collect, no Microsoft.Network client.
* **Idempotent launch.** The VM name is the node id. Launch first GETs the VM: if it exists with
  our node tag (a create that timed out after ARM accepted it, a manager restarted mid-launch) it
  is reported ok and no second PUT is sent.
* **Await the long-running operation.** ``begin_create_or_update`` returns an LRO poller; launch
  waits on it (in the actuator's worker thread, never the controller loop) because Azure reports
  ``AllocationFailed`` and friends only there. All VMs of one call are begun first and then
  awaited together (each poller polls in its own thread), so ten VMs take about as long as one.
* **Errors are values.** ARM error codes (from the synchronous answer or from a Failed LRO) are
  mapped to :class:`LaunchErrorKind`; ``list_nodes``/``terminate`` raise and the actuator retries.
* **Secrets stay out.** Settings name the environment variable holding a service principal's
  secret (``client_secret_env``); the value is read when the client is built and never stored
  in settings, logs, reprs or error messages.

The SDK is imported lazily (inside :func:`_sdk`) so ``import providers.azure`` stays cheap and
works on a manager without the Azure extra installed.
"""

from __future__ import annotations

import base64
import email.utils
import json
import logging
import os
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from providers.base import (TAG_CLUSTER, TAG_NODE, TAG_POOL, CloudNode, CloudState, LaunchErrorKind, LaunchRequest,
                            LaunchResult, PoolSpec, Provider, classify_http_status, tags_for)

log = logging.getLogger("providers.azure")

INSTALL_HINT = "pip install 'hybrid-rm[azure]'"
NETWORK_API_VERSION = "2022-11-01"  # Microsoft.Network API used for the inline NIC
DEFAULT_RETRY_AFTER_S = 30.0  # a 429 without Retry-After

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SUBNET_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A Linux computer name (the node id is both the VM name and the host name): no '_' or '.'.
_COMPUTER_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?")


# -- settings ------------------------------------------------------------------------------
class MarketplaceImage(BaseModel):
    """A marketplace image reference, e.g. Canonical / ubuntu-24_04-lts / server / latest."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    publisher: str = Field(min_length=1, description="image publisher, e.g. Canonical")
    offer: str = Field(min_length=1, description="image offer, e.g. ubuntu-24_04-lts")
    sku: str = Field(min_length=1, description="image SKU, e.g. server")
    version: str = Field("latest", min_length=1, description="image version, or 'latest'")


class SpotSettings(BaseModel):
    """Azure Spot: cheap, evictable capacity (the agent watches for the eviction notice)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(False, description="create Spot VMs (priority: Spot)")
    eviction_policy: Literal["Delete", "Deallocate"] = Field(
        "Delete", description="what Azure does to an evicted VM; Deallocate keeps (and bills) its disk"
    )
    max_price: float = Field(-1, description="USD per hour you pay at most; -1 = up to the on-demand price")

    @field_validator("max_price")
    @classmethod
    def _price(cls, value: float) -> float:
        if value != -1 and value <= 0:
            raise ValueError("max_price must be -1 (pay up to the on-demand price) or a positive USD/hour price")
        return value


class Settings(BaseModel):
    """A pool's ``settings:`` block for ``provider: azure``."""

    # hide_input_in_errors: a secret pasted into the wrong field must not be echoed in an error.
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    subscription_id: str = Field(description="Azure subscription id (a GUID)")
    resource_group: str = Field(min_length=1, max_length=90, description="existing resource group the VMs go in")
    location: str = Field(min_length=1, description="Azure region, e.g. westeurope")
    vm_size: str = Field(min_length=1, description="VM size, e.g. Standard_D4s_v5")
    image: MarketplaceImage | None = Field(None, description="marketplace image {publisher, offer, sku, version}")
    image_id: str | None = Field(None, description="ARM id of a managed or gallery image (instead of image)")
    subnet_id: str = Field(description="ARM id of the existing subnet the VMs' NICs join")
    admin_username: str = Field("azureuser", min_length=1, max_length=64, description="Linux admin user")
    ssh_public_key: str = Field(description="OpenSSH public key of the admin user (password login is disabled)")
    os_disk_size_gb: int | None = Field(None, ge=30, le=4095, description="OS disk size; default: the image's")
    spot: SpotSettings = Field(default_factory=SpotSettings, description="Azure Spot options")
    tenant_id: str | None = Field(None, description="service principal's tenant (with client_id, client_secret_env)")
    client_id: str | None = Field(None, description="service principal's application (client) id")
    client_secret_env: str | None = Field(
        None, description="name of the environment variable holding the service principal's secret"
    )
    resource_manager_url: str = Field(
        "https://management.azure.com", description="ARM endpoint (sovereign clouds, Azure Stack)"
    )
    authority_host: str = Field(
        "login.microsoftonline.com", validate_default=True, description="Microsoft Entra ID (AAD) authority host"
    )
    credential_scope: str | None = Field(None, description="token scope; default: <resource_manager_url>/.default")
    ca_bundle: str | None = Field(None, description="PEM file of extra CAs to trust (private endpoints, tests)")
    request_timeout_s: float = Field(30.0, gt=0, le=600, description="timeout of each HTTP request")
    max_retries: int = Field(2, ge=0, le=10, description="SDK retries of a failed request (the controller backs off too)")
    polling_interval_s: float = Field(15.0, gt=0, le=300, description="how often a create/delete operation is polled")
    operation_timeout_s: float = Field(
        900.0, gt=0, description="how long launch/terminate wait for ARM's long-running operation before moving on"
    )

    @field_validator("subscription_id")
    @classmethod
    def _subscription(cls, value: str) -> str:
        if not re.fullmatch(_GUID, value):
            raise ValueError("subscription_id must be a GUID like 00000000-0000-0000-0000-000000000000")
        return value

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, value: str) -> str:
        if not _SUBNET_ID.fullmatch(value):
            raise ValueError(
                "subnet_id must be a subnet's ARM id: /subscriptions/<sub>/resourceGroups/<rg>/providers/"
                "Microsoft.Network/virtualNetworks/<vnet>/subnets/<subnet>"
            )
        return value

    @field_validator("ssh_public_key")
    @classmethod
    def _ssh_key(cls, value: str) -> str:
        value = value.strip()
        if not value.startswith(("ssh-rsa ", "ssh-ed25519 ", "ecdsa-sha2-")):
            raise ValueError("ssh_public_key must be an OpenSSH public key line (ssh-rsa ..., ssh-ed25519 ...)")
        return value

    @field_validator("client_secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.fullmatch(value):
            raise ValueError(
                "client_secret_env must be the NAME of an environment variable (e.g. AZURE_CLIENT_SECRET), "
                "never the secret itself"
            )
        return value

    @field_validator("resource_manager_url")
    @classmethod
    def _https_url(cls, value: str) -> str:
        if not re.fullmatch(r"https://[^/\s]+/?", value):
            raise ValueError("resource_manager_url must be an https:// URL with no path (bearer tokens need TLS)")
        return value.rstrip("/")

    @field_validator("authority_host")
    @classmethod
    def _authority(cls, value: str) -> str:
        host = value.removeprefix("https://").rstrip("/")
        if not host or "/" in host or "://" in host:
            raise ValueError("authority_host must be a host name (login.microsoftonline.com) or an https:// URL")
        return f"https://{host}"

    @model_validator(mode="after")
    def _consistent(self) -> "Settings":
        if (self.image is None) == (self.image_id is None):
            raise ValueError("set exactly one of image (a marketplace reference) or image_id")
        principal = {"tenant_id": self.tenant_id, "client_id": self.client_id, "client_secret_env": self.client_secret_env}
        missing = [name for name, value in principal.items() if not value]
        if 0 < len(missing) < 3:
            raise ValueError(
                f"a service principal needs tenant_id, client_id and client_secret_env; missing: {', '.join(missing)}"
                " (or leave all three out to use DefaultAzureCredential)"
            )
        return self

    @property
    def scope(self) -> str:
        return self.credential_scope or f"{self.resource_manager_url}/.default"

    def vm_id(self, name: str) -> str:
        return (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Compute/virtualMachines/{name}"
        )


# -- SDK access ----------------------------------------------------------------------------
class AzureProviderError(RuntimeError):
    """A pool that cannot be served (bad settings, missing secret) or a terminate that failed."""

    def __init__(self, message: str, kind: LaunchErrorKind = LaunchErrorKind.CONFIG) -> None:
        super().__init__(message)
        self.kind = kind


def _sdk() -> SimpleNamespace:
    """The Azure SDK modules, imported on first use."""
    try:
        from azure.core import exceptions
        from azure.identity import ClientSecretCredential, DefaultAzureCredential
        from azure.mgmt.compute import ComputeManagementClient, models
    except ImportError as error:
        raise ImportError(f"the Azure provider needs the Azure SDK; install it with: {INSTALL_HINT} ({error})") from error
    return SimpleNamespace(
        exceptions=exceptions,
        ClientSecretCredential=ClientSecretCredential,
        DefaultAzureCredential=DefaultAzureCredential,
        ComputeManagementClient=ComputeManagementClient,
        models=models,
    )


@dataclass(frozen=True, repr=False)
class _PoolClient:
    """One pool's validated settings and its cached ARM client (the credential caches its token)."""

    settings: Settings
    client: Any  # ComputeManagementClient
    credential: Any

    def __repr__(self) -> str:  # never show the credential object
        return f"_PoolClient(subscription={self.settings.subscription_id}, rg={self.settings.resource_group})"


def _build_client(settings: Settings) -> _PoolClient:
    sdk = _sdk()
    transport: dict[str, Any] = {
        "connection_timeout": settings.request_timeout_s,
        "read_timeout": settings.request_timeout_s,
        "retry_total": settings.max_retries,
    }
    if settings.ca_bundle:
        if not os.path.isfile(settings.ca_bundle):
            raise AzureProviderError(f"settings.ca_bundle: no such file: {settings.ca_bundle}")
        transport["connection_verify"] = settings.ca_bundle
    if settings.client_id:
        secret = os.environ.get(settings.client_secret_env or "")
        if not secret:
            raise AzureProviderError(
                f"environment variable {settings.client_secret_env} (settings.client_secret_env) is not set or empty;"
                " it must hold the service principal's secret",
                LaunchErrorKind.AUTH,
            )
        credential = sdk.ClientSecretCredential(
            settings.tenant_id,
            settings.client_id,
            secret,
            authority=settings.authority_host,
            # The authority comes from the admin's config; MSAL's instance discovery only knows
            # Microsoft's public hosts, so it would reject sovereign/Azure Stack/test authorities.
            disable_instance_discovery=True,
            **transport,
        )
    else:
        extra = {"connection_verify": settings.ca_bundle} if settings.ca_bundle else {}
        credential = sdk.DefaultAzureCredential(authority=settings.authority_host, **extra)
    client = sdk.ComputeManagementClient(
        credential,
        settings.subscription_id,
        base_url=settings.resource_manager_url,
        credential_scopes=[settings.scope],
        polling_interval=settings.polling_interval_s,
        **transport,
    )
    return _PoolClient(settings, client, credential)


# -- error classification ------------------------------------------------------------------
# ARM error codes (synchronous answers and Failed operations) by launch error class. Quota is
# told by wording: Azure answers 409 OperationNotAllowed "... exceeding approved ... quota".
CAPACITY_CODES = frozenset({"SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed",
                            "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest"})
AUTH_CODES = frozenset({"AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
                        "ExpiredAuthenticationToken", "InvalidAuthenticationTokenTenant", "LinkedAuthorizationFailed",
                        "invalid_client", "unauthorized_client"})
CONFIG_CODES = frozenset({"InvalidParameter", "BadRequest", "ImageNotFound", "PlatformImageNotFound",
                          "InvalidResourceReference", "NotFound", "ResourceNotFound", "ResourceGroupNotFound",
                          "SubscriptionNotFound", "InvalidSubscriptionId", "LocationRequired",
                          "LocationNotAvailableForResourceType", "MissingSubscriptionRegistration",
                          "VMMarketplaceInvalidInput", "MarketplacePurchaseEligibilityFailed",
                          "OperationNotAllowed"})  # without quota wording: e.g. no Spot for this size
THROTTLE_CODES = frozenset({"TooManyRequests", "SubscriptionRequestsThrottled"})


def _arm_error(error: Any) -> tuple[list[str], str]:
    """Every ARM error code in the body (top level and details) and the top-level message."""
    odata = getattr(error, "error", None)
    codes: list[str] = []
    stack = [odata] if odata is not None else []
    while stack:
        item = stack.pop(0)
        if getattr(item, "code", None):
            codes.append(str(item.code))
        stack.extend(getattr(item, "details", None) or [])
    message = str(getattr(odata, "message", "") or "") if odata is not None else ""
    return codes, message or str(getattr(error, "message", "") or error)


def _retry_after(error: Any) -> float:
    response = getattr(error, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value)
            if parsed is not None:
                return max(0.0, parsed.timestamp() - time.time())
    return DEFAULT_RETRY_AFTER_S


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(error: BaseException) -> tuple[LaunchErrorKind, str, float | None]:
    """(kind, short human message, retry-after seconds) of an SDK exception."""
    if isinstance(error, AzureProviderError):
        return error.kind, str(error), None
    if isinstance(error, ImportError):
        return LaunchErrorKind.CONFIG, str(error), None
    exc = _sdk().exceptions
    if isinstance(error, exc.ClientAuthenticationError):  # Entra ID refused the credential, or ARM said 401
        cause = error.__cause__  # azure-identity wraps "could not reach Entra ID" in an auth error
        if isinstance(cause, (exc.ServiceRequestError, exc.ServiceResponseError)):
            return classify(cause)
        codes, message = _arm_error(error)
        status = error.status_code
        return LaunchErrorKind.AUTH, _short(f"{status or ''} {codes[0] if codes else ''}: {message}".strip(" :")), None
    if isinstance(error, exc.HttpResponseError):
        status = error.status_code
        codes, message = _arm_error(error)
        # A Failed LRO carries its status poll's 200: show only the code then.
        prefix = " ".join(filter(None, [str(status) if status and status >= 400 else "", codes[0] if codes else ""]))
        text = _short(f"{prefix}: {message}" if prefix else message)
        if status == 429 or THROTTLE_CODES.intersection(codes):
            return LaunchErrorKind.THROTTLED, text, _retry_after(error)
        if any("quota" in code.lower() for code in codes) or ("OperationNotAllowed" in codes and "quota" in message.lower()):
            return LaunchErrorKind.QUOTA, text, None
        for kind, known in (
            (LaunchErrorKind.AUTH, AUTH_CODES),
            (LaunchErrorKind.CAPACITY, CAPACITY_CODES),
            (LaunchErrorKind.CONFIG, CONFIG_CODES),
        ):
            if known.intersection(codes):
                return kind, text, None
        if status == 409:  # a conflict that is not a quota: another operation is in progress
            return LaunchErrorKind.TRANSIENT, text, None
        # Unknown codes: by status (a Failed LRO's unknown code counts as a 5xx: transient).
        return classify_http_status(status if status and status >= 400 else 500), text, None
    if isinstance(error, exc.ServiceRequestError):  # never reached Azure: DNS, refused, TLS
        if "CERTIFICATE_VERIFY_FAILED" in str(error):
            return LaunchErrorKind.CONFIG, _short(f"TLS certificate not trusted (settings.ca_bundle?): {error}"), None
        return LaunchErrorKind.TRANSIENT, _short(f"cannot reach Azure: {error}"), None
    if isinstance(error, exc.ServiceResponseError):  # sent, but no (complete) answer: timeout
        return LaunchErrorKind.TRANSIENT, _short(f"no answer from Azure: {error}"), None
    return LaunchErrorKind.TRANSIENT, _short(f"{type(error).__name__}: {error}"), None


# -- state mapping -------------------------------------------------------------------------
# provisioningState only: a Spot VM evicted with Deallocate stays "Succeeded" and shows
# PowerState/deallocated in its instance view, which list_nodes does not fetch (one extra GET
# per VM per tick). Such a node's agent has already left warmly (agents/scheduled_events.py)
# and its heartbeats stop, so the manager marks it lost and terminates it.
_STATES = {
    "creating": CloudState.PENDING,
    "updating": CloudState.PENDING,
    "migrating": CloudState.PENDING,
    "succeeded": CloudState.RUNNING,
    "deleting": CloudState.STOPPING,
    "failed": CloudState.FAILED,
    "canceled": CloudState.FAILED,
}


def _state(provisioning_state: str | None) -> CloudState:
    return _STATES.get((provisioning_state or "").lower(), CloudState.UNKNOWN)


def _text(value: Any) -> Any:
    """The plain string of an SDK enum value (``VirtualMachineSizeTypes`` etc.)."""
    return getattr(value, "value", value)


def _is_ours(vm: Any, pool: PoolSpec) -> bool:
    tags = vm.tags or {}
    return tags.get(TAG_CLUSTER) == pool.cluster and tags.get(TAG_POOL) == pool.name and bool(tags.get(TAG_NODE))


# -- the provider --------------------------------------------------------------------------
class AzureProvider(Provider):
    name = "azure"
    user_data_limit = 65535  # osProfile.customData: at most 65535 bytes once base64-decoded

    def __init__(self, state_dir: Any, cluster: str) -> None:
        self.cluster = cluster
        self._clients: dict[tuple[str, str], _PoolClient] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AzureProvider(cluster={self.cluster!r}, pools={sorted({name for name, _ in self._clients})})"

    def _pool_client(self, pool: PoolSpec) -> _PoolClient:
        """The pool's cached client; a new one if its settings changed. Raises on bad settings."""
        key = (pool.name, json.dumps(pool.settings, sort_keys=True, default=str))
        with self._lock:
            cached = self._clients.get(key)
            if cached is None:
                from pydantic import ValidationError

                try:
                    settings = Settings.model_validate(pool.settings)
                except ValidationError as error:
                    problems = "; ".join(
                        f"settings.{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}"
                        for item in error.errors()
                    )
                    raise AzureProviderError(f"pool {pool.name}: invalid settings: {problems}") from None
                cached = self._clients[key] = _build_client(settings)
            return cached

    def _forget(self, pool: PoolSpec) -> None:
        """Drop the pool's cached client after an auth failure, so the next call re-reads the secret
        (rotated, or fixed by an admin). Not closed: another thread may still be using it."""
        with self._lock:
            for key in [key for key in self._clients if key[0] == pool.name]:
                del self._clients[key]

    # -- launch ----------------------------------------------------------------------------
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        results: dict[int, LaunchResult] = {}
        todo: list[tuple[int, LaunchRequest]] = []
        for index, request in enumerate(requests):
            problem = self._precheck(request)
            if problem:
                results[index] = self._failed(pool, request.node_id, LaunchErrorKind.CONFIG, problem)
            else:
                todo.append((index, request))
        if todo:
            try:
                pc = self._pool_client(pool)
            except (AzureProviderError, ImportError) as error:
                kind, message, _ = classify(error)
                for index, request in todo:
                    results[index] = self._failed(pool, request.node_id, kind, message)
            else:
                self._launch_all(pc, pool, todo, results)
                if any(result.error_kind is LaunchErrorKind.AUTH for result in results.values()):
                    self._forget(pool)
        return [results[index] for index in range(len(requests))]

    def _precheck(self, request: LaunchRequest) -> str | None:
        size = len(request.user_data.encode("utf-8"))
        if self.user_data_limit is not None and size > self.user_data_limit:
            return f"user data too large: {size} bytes, over Azure's custom data limit of {self.user_data_limit} bytes"
        if not _COMPUTER_NAME.fullmatch(request.node_id):
            return (
                f"node id {request.node_id!r} is not a valid Azure Linux VM/computer name "
                "(letters, digits and inner hyphens, at most 64): rename the pool"
            )
        return None

    def _launch_all(
        self, pc: _PoolClient, pool: PoolSpec, todo: list[tuple[int, LaunchRequest]], results: dict[int, LaunchResult]
    ) -> None:
        # Begin every create (GET, PUT: seconds each, in request order), then wait on all the
        # pollers together: the minutes of provisioning overlap, each poller polls in its thread.
        begun = [self._begin_create(pc, pool, request) for _, request in todo]
        deadline = time.monotonic() + pc.settings.operation_timeout_s
        for (index, request), started in zip(todo, begun):
            if isinstance(started, LaunchResult):
                results[index] = started
            else:
                results[index] = self._await_create(pc, pool, request.node_id, started, deadline)

    def _begin_create(self, pc: _PoolClient, pool: PoolSpec, request: LaunchRequest) -> Any:
        """The create's LRO poller, or a finished LaunchResult (VM already there, or an error)."""
        node_id = request.node_id
        settings = pc.settings
        exc = _sdk().exceptions
        try:
            try:
                existing = pc.client.virtual_machines.get(settings.resource_group, node_id)
            except exc.ResourceNotFoundError as error:
                codes, _ = _arm_error(error)
                if "ResourceGroupNotFound" in codes:
                    raise
                existing = None
            if existing is not None:
                return self._existing(pool, node_id, existing)
            body = _vm_body(_sdk().models, settings, pool, request)
            return pc.client.virtual_machines.begin_create_or_update(settings.resource_group, node_id, body)
        except Exception as error:  # noqa: BLE001 - every failure becomes a typed value
            return self._failed_from(pool, node_id, error)

    def _existing(self, pool: PoolSpec, node_id: str, vm: Any) -> LaunchResult:
        """A VM with this name already exists: ours from an earlier attempt, or a stranger."""
        tags = vm.tags or {}
        if tags.get(TAG_NODE) != node_id or tags.get(TAG_CLUSTER) != pool.cluster or tags.get(TAG_POOL) != pool.name:
            return self._failed(
                pool, node_id, LaunchErrorKind.CONFIG,
                f"a VM named {node_id} already exists in the resource group but is not this pool's node",
            )
        state = _state(vm.provisioning_state)
        if state is CloudState.FAILED:
            return self._failed(
                pool, node_id, LaunchErrorKind.CAPACITY,
                f"VM {node_id} exists in provisioning state {vm.provisioning_state} (an earlier create failed)",
            )
        if state is CloudState.STOPPING:
            return self._failed(pool, node_id, LaunchErrorKind.TRANSIENT, f"VM {node_id} is being deleted")
        log.info("pool=%s node=%s: VM already exists (%s); not creating it again", pool.name, node_id, vm.provisioning_state)
        return LaunchResult(node_id, True, provider_ref=vm.id)

    def _await_create(self, pc: _PoolClient, pool: PoolSpec, node_id: str, poller: Any, deadline: float) -> LaunchResult:
        try:
            vm = poller.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as error:  # noqa: BLE001
            return self._failed_from(pool, node_id, error)
        if not poller.done():
            log.info("pool=%s node=%s: create still running after %.0f s; list_nodes will follow it",
                     pool.name, node_id, pc.settings.operation_timeout_s)
            return LaunchResult(node_id, True, provider_ref=pc.settings.vm_id(node_id))
        return LaunchResult(node_id, True, provider_ref=getattr(vm, "id", None) or pc.settings.vm_id(node_id))

    def _failed_from(self, pool: PoolSpec, node_id: str, error: BaseException) -> LaunchResult:
        kind, message, retry_after = classify(error)
        return self._failed(pool, node_id, kind, message, retry_after)

    @staticmethod
    def _failed(
        pool: PoolSpec, node_id: str, kind: LaunchErrorKind, message: str, retry_after: float | None = None
    ) -> LaunchResult:
        log.warning("pool=%s node=%s: launch failed (%s): %s", pool.name, node_id, kind.value, message)
        return LaunchResult(node_id, False, error_kind=kind, error=message, retry_after_s=retry_after)

    # -- list ------------------------------------------------------------------------------
    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        try:
            return self._list_nodes(pool)
        except Exception as error:
            if classify(error)[0] is LaunchErrorKind.AUTH:
                self._forget(pool)
            raise

    def _list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        pc = self._pool_client(pool)
        nodes = []
        # ARM's VM list has no server-side tag filter ($filter only takes virtualMachineScaleSet/id);
        # the resources API filters by one tag but returns no VM state. So: list the resource
        # group (paged by the SDK) and keep VMs tagged with our cluster and pool.
        for vm in pc.client.virtual_machines.list(pc.settings.resource_group):
            if not _is_ours(vm, pool):
                continue
            extra: dict[str, Any] = {
                "size": _text(vm.hardware_profile.vm_size) if vm.hardware_profile else None,
                "location": vm.location,
                "provisioning_state": vm.provisioning_state,
                "spot": (_text(vm.priority) or "").lower() == "spot",
            }
            if extra["spot"]:
                extra["eviction_policy"] = _text(vm.eviction_policy)
            if vm.zones:
                extra["zones"] = list(vm.zones)
            # No IP here: it lives on the NIC resource (one Microsoft.Network GET per VM).
            nodes.append(CloudNode(vm.tags[TAG_NODE], pool.name, vm.id, _state(vm.provisioning_state), extra))
        return nodes

    # -- terminate -------------------------------------------------------------------------
    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        if not node_ids:
            return
        pc = self._pool_client(pool)
        begun = [self._begin_delete(pc, pool, node_id) for node_id in node_ids]  # then await all together
        deadline = time.monotonic() + pc.settings.operation_timeout_s
        errors: list[tuple[str, BaseException]] = []
        for node_id, started in zip(node_ids, begun):
            if isinstance(started, BaseException):
                errors.append((node_id, started))
            elif started is not None:
                try:
                    started.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception as error:  # noqa: BLE001
                    errors.append((node_id, error))
        if errors:
            summary = "; ".join(f"{node_id}: {classify(error)[1]}" for node_id, error in errors)
            kind = classify(errors[0][1])[0]
            log.warning("pool=%s: terminate failed for %s", pool.name, summary)
            if kind is LaunchErrorKind.AUTH:
                self._forget(pool)
            raise AzureProviderError(
                f"pool {pool.name}: terminate failed for {len(errors)} node(s): {summary}", kind
            ) from errors[0][1]

    def _begin_delete(self, pc: _PoolClient, pool: PoolSpec, node_id: str) -> Any:
        """The delete's poller; None if the VM is already gone; the exception if a call failed."""
        exc = _sdk().exceptions
        rg = pc.settings.resource_group
        try:
            # GET first: never delete a VM that merely shares a node's name but is not ours.
            try:
                vm = pc.client.virtual_machines.get(rg, node_id)
            except exc.ResourceNotFoundError as error:
                return error if "ResourceGroupNotFound" in _arm_error(error)[0] else None
            if not _is_ours(vm, pool) or (vm.tags or {}).get(TAG_NODE) != node_id:
                log.warning("pool=%s node=%s: VM of that name is not ours (tags %s); not deleting it",
                            pool.name, node_id, vm.tags)
                return None
            return pc.client.virtual_machines.begin_delete(rg, node_id)
        except exc.ResourceNotFoundError as error:
            if "ResourceGroupNotFound" in _arm_error(error)[0]:
                return error
            return None  # deleted between our GET and DELETE
        except Exception as error:  # noqa: BLE001 - gathered and raised once all deletes ran
            return error

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for pc in clients:
            for closable in (pc.client, pc.credential):
                try:
                    closable.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    log.debug("closing an Azure client failed", exc_info=True)


def _vm_body(models: Any, settings: Settings, pool: PoolSpec, request: LaunchRequest) -> Any:
    """The VirtualMachine to PUT: Linux, inline NIC, self-deleting disk and NIC, our tags."""
    node_id = request.node_id
    if settings.image is not None:
        image = models.ImageReference(
            publisher=settings.image.publisher, offer=settings.image.offer,
            sku=settings.image.sku, version=settings.image.version,
        )
    else:
        image = models.ImageReference(id=settings.image_id)
    os_disk = models.OSDisk(create_option="FromImage", delete_option="Delete", disk_size_gb=settings.os_disk_size_gb)
    os_profile = models.OSProfile(
        computer_name=node_id,
        admin_username=settings.admin_username,
        custom_data=base64.b64encode(request.user_data.encode("utf-8")).decode("ascii") if request.user_data else None,
        linux_configuration=models.LinuxConfiguration(
            disable_password_authentication=True,
            ssh=models.SshConfiguration(public_keys=[models.SshPublicKey(
                path=f"/home/{settings.admin_username}/.ssh/authorized_keys", key_data=settings.ssh_public_key,
            )]),
        ),
    )
    nic = models.VirtualMachineNetworkInterfaceConfiguration(
        name=f"{node_id}-nic",
        properties=models.VirtualMachineNetworkInterfaceConfigurationProperties(
            primary=True,
            delete_option="Delete",
            ip_configurations=[models.VirtualMachineNetworkInterfaceIPConfiguration(
                name="ipconfig1",
                properties=models.VirtualMachineNetworkInterfaceIPConfigurationProperties(
                    primary=True, subnet=models.SubResource(id=settings.subnet_id),
                ),
            )],
        ),
    )
    properties = models.VirtualMachineProperties(
        hardware_profile=models.HardwareProfile(vm_size=settings.vm_size),
        storage_profile=models.StorageProfile(image_reference=image, os_disk=os_disk),
        os_profile=os_profile,
        network_profile=models.NetworkProfile(
            network_api_version=NETWORK_API_VERSION, network_interface_configurations=[nic],
        ),
    )
    if settings.spot.enabled:
        properties.priority = "Spot"
        properties.eviction_policy = settings.spot.eviction_policy
        properties.billing_profile = models.BillingProfile(max_price=settings.spot.max_price)
    return models.VirtualMachine(location=settings.location, tags=tags_for(pool, node_id), properties=properties)


PROVIDER = AzureProvider
