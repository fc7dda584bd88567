"""Anything a Libcloud driver call raises, in our terms: a :class:`LaunchErrorKind`, a short
message with every secret scrubbed, and for throttling the delay to wait.

Why apart: clouds answer in codes (EC2's ``<Code>``), prose (OpenStack faults) or HTTP status
only; the table that reads them grows with every cloud met, and the provider only asks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from providers.base import LaunchErrorKind, classify_http_status
from providers import http_errors

DEFAULT_THROTTLE_S = 30.0  # EC2 throttles with 503 RequestLimitExceeded and no Retry-After


class LibcloudCallError(RuntimeError):
    """A cloud call that failed, with its error class; the message never holds a secret."""

    def __init__(self, kind: LaunchErrorKind, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after_s = retry_after_s


#: Cloud error codes (EC2's <Code>, also found in other clouds' bodies) and their class.
_CODES = {
    LaunchErrorKind.THROTTLED: ("RequestLimitExceeded", "Throttling", "ThrottlingException", "TooManyRequests",
                                "rateLimitExceeded"),
    LaunchErrorKind.QUOTA: ("InstanceLimitExceeded", "VcpuLimitExceeded", "MaxSpotInstanceCountExceeded",
                            "ResourceLimitExceeded", "VolumeLimitExceeded", "AddressLimitExceeded", "QuotaExceeded",
                            "QUOTA_EXCEEDED", "OperationNotAllowed"),
    LaunchErrorKind.CAPACITY: ("InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
                               "InsufficientReservedInstanceCapacity", "ZONE_RESOURCE_POOL_EXHAUSTED",
                               "SkuNotAvailable", "AllocationFailed"),
    LaunchErrorKind.AUTH: ("AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                           "OptInRequired", "Blocked", "AuthorizationFailed"),
    LaunchErrorKind.CONFIG: ("InvalidAMIID.NotFound", "InvalidAMIID.Malformed", "InvalidAMIID.Unavailable",
                             "InvalidParameterValue", "InvalidParameterCombination", "InvalidParameter",
                             "MissingParameter", "InvalidSubnetID.NotFound", "InvalidGroup.NotFound",
                             "InvalidKeyPair.NotFound", "InvalidInstanceType", "Unsupported",
                             "IdempotentParameterMismatch", "InvalidBlockDeviceMapping"),
    LaunchErrorKind.TRANSIENT: ("InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable"),
}
_CODE_KIND = {code: kind for kind, codes in _CODES.items() for code in codes}
#: Phrases of clouds that answer in prose (OpenStack's JSON faults), lower case.
_PHRASES = (("quota exceeded", LaunchErrorKind.QUOTA), ("exceeds quota", LaunchErrorKind.QUOTA),
            ("no valid host", LaunchErrorKind.CAPACITY), ("insufficient capacity", LaunchErrorKind.CAPACITY),
            ("rate limit", LaunchErrorKind.THROTTLED), ("did not complete", LaunchErrorKind.TRANSIENT))
_CODE_LINE = re.compile(r"^\s*([A-Za-z][\w.]*): ", re.MULTILINE)
_NOT_FOUND_CODES = ("InvalidInstanceID.NotFound",)


def classify(error: BaseException, secrets: Sequence[str] = ()) -> LibcloudCallError:
    """The error class, a short message and Retry-After of anything a driver call raised."""
    if isinstance(error, LibcloudCallError):
        return error
    import requests
    from libcloud.common.exceptions import BaseHTTPError, RateLimitReachedError
    from libcloud.common.types import (
        InvalidCredsError,
        LibcloudError,
        MalformedResponseError,
        ProviderError,
    )

    status, text, headers = None, "", {}
    if isinstance(error, requests.exceptions.SSLError):
        return LibcloudCallError(LaunchErrorKind.CONFIG,
                                 f"TLS verification failed talking to {_host(error)}: check ca_bundle")
    if isinstance(error, (requests.exceptions.Timeout, TimeoutError)):
        return LibcloudCallError(LaunchErrorKind.TRANSIENT, f"timed out talking to {_host(error)}")
    if isinstance(error, (requests.exceptions.ConnectionError, ConnectionError)):
        return LibcloudCallError(LaunchErrorKind.TRANSIENT, f"cannot connect to {_host(error)}")
    if isinstance(error, RateLimitReachedError):
        return LibcloudCallError(LaunchErrorKind.THROTTLED, "HTTP 429: rate limit exceeded",
                                 error.retry_after or DEFAULT_THROTTLE_S)
    if isinstance(error, InvalidCredsError):
        return LibcloudCallError(LaunchErrorKind.AUTH, _short(f"credentials refused: {error.value}", secrets))
    if isinstance(error, BaseHTTPError):
        status, text, headers = error.code, str(error.message), error.headers or {}
    elif isinstance(error, ProviderError):
        status, text = error.http_code, str(error.value)
    elif isinstance(error, MalformedResponseError):
        return LibcloudCallError(LaunchErrorKind.TRANSIENT, _short(f"malformed cloud response: {error.value}", secrets))
    elif isinstance(error, LibcloudError):
        text = str(error.value)
    elif isinstance(error, (TypeError, ValueError, AttributeError, KeyError)):
        return LibcloudCallError(LaunchErrorKind.CONFIG, _short(f"{type(error).__name__}: {error}", secrets))
    else:
        text = f"{type(error).__name__}: {error}"
    kind = _kind_of(text)
    if kind is None:
        kind = classify_http_status(status) if status is not None else (
            LaunchErrorKind.CONFIG if isinstance(error, LibcloudError) else LaunchErrorKind.TRANSIENT)
    retry_after = None
    if kind == LaunchErrorKind.THROTTLED:
        retry_after = http_errors.retry_after_s(headers) or DEFAULT_THROTTLE_S
    prefix = f"HTTP {status}: " if status is not None else ""
    return LibcloudCallError(kind, _short(prefix + text, secrets), retry_after)


def _kind_of(text: str) -> LaunchErrorKind | None:
    for code in _CODE_LINE.findall(text):
        if code in _CODE_KIND:
            return _CODE_KIND[code]
    lowered = text.lower()
    for code, kind in _CODE_KIND.items():  # codes inside a JSON body
        if f'"{code.lower()}"' in lowered:
            return kind
    return next((kind for phrase, kind in _PHRASES if phrase in lowered), None)


def retryable(error: BaseException) -> bool:
    import requests

    if isinstance(error, requests.exceptions.ConnectTimeout):
        return True  # never sent
    if isinstance(error, (requests.exceptions.Timeout, TimeoutError, requests.exceptions.SSLError)):
        return False  # a read timeout may have been acted on; TLS errors do not heal
    return classify(error).kind == LaunchErrorKind.TRANSIENT


def _host(error: BaseException) -> str:
    request = getattr(error, "request", None)
    url = getattr(request, "url", None) or ""
    match = re.match(r"^\w+://([^/?#]+)", url)
    return match.group(1) if match else "the cloud"


def scrub(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(Signature|X-Amz-Signature|X-Amz-Credential|AWSAccessKeyId)=[^&\s]+", r"\1=***", text)


def _short(text: str, secrets: Sequence[str] = ()) -> str:
    return http_errors.shorten(scrub(text, secrets), 300, "...")


def not_found(error: BaseException) -> bool:
    from libcloud.common.exceptions import BaseHTTPError
    from libcloud.common.types import ProviderError

    if isinstance(error, BaseHTTPError):
        return error.code == 404 or any(code in str(error.message) for code in _NOT_FOUND_CODES)
    return isinstance(error, ProviderError) and error.http_code == 404
