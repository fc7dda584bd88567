"""The pydantic model of a Libcloud pool's ``settings:`` block. Secrets never appear here, only
the names of the environment variables that hold them.

Why apart from the driver: the config loader validates every pool's settings at start-up; this
module imports pydantic only (the driver name is checked against Libcloud's list when Libcloud
is installed, at first use otherwise).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

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
