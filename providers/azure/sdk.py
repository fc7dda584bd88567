"""The Azure SDK modules, imported on first use and from this module only.

Why: ``import providers.azure`` must stay cheap and work on a manager without the Azure extra
(a cluster with no Azure pool never needs it); a missing SDK becomes a CONFIG launch error
that says how to install it.
"""

from __future__ import annotations

from types import SimpleNamespace

INSTALL_HINT = "pip install 'hybrid-rm[azure]'"


def sdk() -> SimpleNamespace:
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
