"""SDK and keystoneauth exceptions in our terms: a :class:`LaunchErrorKind`, a short message
and, for a 429, the delay the cloud asked for.

Why apart: which HTTP status, body wording or exception type means quota, capacity, auth,
config or a glitch is a table that grows with every cloud met; the provider only asks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from providers.base import LaunchErrorKind, classify_http_status
from providers.http_errors import retry_after_s, shorten

#: What a 429 without a usable Retry-After header asks the controller to wait.
DEFAULT_RETRY_AFTER_S = 10.0
#: Nova faults and error bodies are cut to this many characters (one log line).
MESSAGE_CHARS = 240
#: Phrases of a build fault that mean "the cloud has no room for it" rather than a glitch.
_CAPACITY_FAULTS = ("no valid host", "exhausted all hosts", "not enough hosts")


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


def short(text: object) -> str:
    return shorten(text, MESSAGE_CHARS)


def retry_after(response: Any) -> float:
    """The delay a 429 asks for; our default when it gives none the controller can read."""
    seconds = retry_after_s(response.headers if response is not None else None)
    return DEFAULT_RETRY_AFTER_S if seconds is None else seconds


def build_fault_kind(reason: str) -> LaunchErrorKind:
    """A server Nova failed to build: CAPACITY when the fault says no host had room, else TRANSIENT."""
    return LaunchErrorKind.CAPACITY if any(p in reason.lower() for p in _CAPACITY_FAULTS) \
        else LaunchErrorKind.TRANSIENT


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
        text = short(details or "")
        lowered = text.lower()
        if status in (403, 409, 413) and "quota" in lowered:
            return Failure(LaunchErrorKind.QUOTA, f"quota exceeded (HTTP {status}): {text}")
        if status == 429:
            return Failure(LaunchErrorKind.THROTTLED, f"throttled (HTTP 429): {text}", retry_after(response))
        if status == 409:
            return Failure(LaunchErrorKind.TRANSIENT, f"conflict (HTTP 409): {text}")
        kind = classify_http_status(status)
        return Failure(kind, f"HTTP {status}: {text}")
    if isinstance(error, ks_exc.SSLError):
        return Failure(LaunchErrorKind.CONFIG, f"TLS error (check ca_bundle): {short(error)}")
    if isinstance(error, ks_exc.ConnectTimeout):
        return Failure(LaunchErrorKind.TRANSIENT, "no answer within request_timeout_s; a create may still have "
                                                  "happened (the next launch of this node finds it)")
    if isinstance(error, ks_exc.ConnectionError):
        return Failure(LaunchErrorKind.TRANSIENT, f"cannot reach the cloud: {short(error)}")
    if isinstance(error, (ks_exc.EndpointNotFound, ks_exc.MissingAuthPlugin, ks_exc.auth_plugins.MissingRequiredOptions,
                          os_exc.ConfigException, os_exc.DuplicateResource, os_exc.EndpointNotFound)):
        return Failure(LaunchErrorKind.CONFIG, short(error))
    if isinstance(error, ks_exc.DiscoveryFailure):
        return Failure(LaunchErrorKind.TRANSIENT, f"service discovery failed: {short(error)}")
    return Failure(LaunchErrorKind.TRANSIENT, f"{type(error).__name__}: {short(error)}")
