"""One pool's OpenStack connection: the lazy SDK import, ``openstack.connect`` from the pool's
settings, a no-retry compute proxy for creates, and the flavor/image/network ids it resolves.

Why apart from the provider: how a connection is built (which secret is read, which retries,
which microversion) is what an admin debugs when a pool cannot authenticate or a create is
sent twice; the provider only asks for a client.
"""

from __future__ import annotations

import copy
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from providers.base import LaunchErrorKind
from providers.openstack.errors import OpenStackSetupError
from providers.openstack.settings import Settings

#: The first compute microversion that accepts ``tags`` in a server create request.
COMPUTE_MICROVERSION = "2.52"
INSTALL_HINT = "pip install 'hybrid-rm[openstack]'"


def sdk() -> Any:
    try:
        import openstack
    except ImportError as error:  # pragma: no cover - exercised where the SDK is absent
        raise OpenStackSetupError(f"the OpenStack provider needs openstacksdk: {INSTALL_HINT}") from error
    return openstack


def connect(settings: Settings) -> Any:
    """An ``openstack.connection.Connection`` for these settings (secrets read from the environment)."""
    openstack = sdk()
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
class PoolClient:
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
