"""One hardened Libcloud driver per pool and thread: credentials read from the environment,
the pool's timeout, CA bundle and bounded retries on every connection, and the create
arguments (size, image, location, create_args) built once without an API call.

Why apart from the provider: how a driver is built and hardened is where Libcloud's global
state (CA path, retry env) is kept out and where a pool's secrets are read; the provider only
asks for a client.
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from providers.base import LaunchErrorKind, PoolSpec
from providers.libcloud.capabilities import Capabilities, capabilities
from providers.libcloud.errors import LibcloudCallError, retryable, scrub
from providers.libcloud.settings import Settings

INSTALL_HINT = "pip install 'hybrid-rm[libcloud]'"
RETRY_BASE_S = 0.5
#: Drivers whose constructor starts with other arguments (tenant_id, subscription_id: in driver_args).
_CREDENTIALS_BY_NAME = {"azure_arm": ("key", "secret")}


@dataclass
class Client:
    """One pool's driver for one thread (drivers are not thread-safe), hardened, with what launch reuses."""

    settings: Settings
    driver: Any
    caps: Capabilities
    create_kwargs: dict[str, Any]  # size, image, location and the admin's create_args, as driver objects
    connections: list[Any]
    secrets: tuple[str, ...]  # scrubbed from every message
    retry_enabled: bool = True


def build_client(pool: PoolSpec, settings: Settings) -> Client:
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
                                f"cannot set up libcloud driver {settings.driver!r}: {scrub(str(error), secrets)}") from None
    client = Client(settings, driver, capabilities(settings.driver, type(driver)), {}, _connections(driver), tuple(secrets))
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


def _harden(connection: Any, client: Client) -> None:
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
                if attempt >= settings.max_retries or not client.retry_enabled or not retryable(error):
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


def _create_kwargs(client: Client) -> dict[str, Any]:
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
