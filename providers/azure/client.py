"""One pool's ARM client: a credential (service principal or ``DefaultAzureCredential``) and a
``ComputeManagementClient`` with the pool's timeouts, retries and CA bundle.

Why apart from the provider: how a client is built (which secret is read, which transport
options every request gets) is what an admin debugs when a pool cannot authenticate; the
provider only asks for a client and caches it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from providers.azure.errors import AzureProviderError
from providers.azure.sdk import sdk
from providers.azure.settings import Settings
from providers.base import LaunchErrorKind


@dataclass(frozen=True, repr=False)
class PoolClient:
    """One pool's validated settings and its cached ARM client (the credential caches its token)."""

    settings: Settings
    client: Any  # ComputeManagementClient
    credential: Any

    def __repr__(self) -> str:  # never show the credential object
        return f"PoolClient(subscription={self.settings.subscription_id}, rg={self.settings.resource_group})"


def build_client(settings: Settings) -> PoolClient:
    modules = sdk()
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
        credential = modules.ClientSecretCredential(
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
        credential = modules.DefaultAzureCredential(authority=settings.authority_host, **extra)
    client = modules.ComputeManagementClient(
        credential,
        settings.subscription_id,
        base_url=settings.resource_manager_url,
        credential_scopes=[settings.scope],
        polling_interval=settings.polling_interval_s,
        **transport,
    )
    return PoolClient(settings, client, credential)
