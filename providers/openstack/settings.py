"""The pydantic models of an OpenStack pool's ``settings:`` block.

Why apart from the driver: the config loader validates every pool's settings at start-up,
on machines where openstacksdk may not be installed; this module imports pydantic only.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


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
