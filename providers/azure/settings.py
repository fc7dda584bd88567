"""The pydantic model of an Azure pool's ``settings:`` block.

Why apart from the driver: the config loader validates every pool's settings at start-up,
long before (and on machines where) the Azure SDK is ever imported; this module imports
pydantic only. Errors name the field and never echo a value (a secret may be pasted in the
wrong field).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SUBNET_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+/subnets/[^/]+",
    re.IGNORECASE,
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


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
