"""Provider drivers, looked up by the name a pool's ``provider`` field gives.

Why lazy imports: a driver module imports its cloud SDK only inside the provider class, and
this registry imports a driver module only when a pool uses it, so a cluster with only local
pools never pays for (or needs) the Azure, OpenStack or Libcloud SDKs.

Each driver module defines ``Settings`` (the pydantic model of the pool's ``settings:``
block, validated when the config loads, errors naming ``pools[i].settings.<field>``) and
``PROVIDER`` (the provider class).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from providers.base import Provider

MODULES = {
    "local": "providers.local",
    "azure": "providers.azure",
    "openstack": "providers.openstack",
    "libcloud": "providers.libcloud",
}
KNOWN_PROVIDERS = tuple(MODULES)


def _module(name: str) -> Any:
    if name not in MODULES:
        raise ValueError(f"unknown provider {name!r}; known: {', '.join(KNOWN_PROVIDERS)}")
    return importlib.import_module(MODULES[name])


def settings_model(name: str) -> type[BaseModel]:
    """The pydantic model of a provider's pool ``settings``."""
    return _module(name).Settings


def make_provider(name: str, *, state_dir: str | Path, cluster: str) -> Provider:
    """One provider instance per driver; it builds a client per pool from the pool's settings."""
    return _module(name).PROVIDER(state_dir=state_dir, cluster=cluster)
