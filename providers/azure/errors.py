"""ARM errors in our terms: an SDK exception becomes a :class:`LaunchErrorKind`, a short message
and, for throttling, the delay Azure asked for.

Why apart: the classification is a table of ARM codes that grows as Azure invents new ones;
keeping it alone keeps the provider's launch/list/terminate readable. ``list_nodes`` and
``terminate`` raise, ``launch`` returns these as values.
"""

from __future__ import annotations

from typing import Any

from providers.azure.sdk import sdk
from providers.base import LaunchErrorKind, classify_http_status
from providers.http_errors import retry_after_s, shorten

DEFAULT_RETRY_AFTER_S = 30.0  # a 429 without Retry-After


class AzureProviderError(RuntimeError):
    """A pool that cannot be served (bad settings, missing secret) or a terminate that failed."""

    def __init__(self, message: str, kind: LaunchErrorKind = LaunchErrorKind.CONFIG) -> None:
        super().__init__(message)
        self.kind = kind


# ARM error codes (synchronous answers and Failed operations) by launch error class. Quota is
# told by wording: Azure answers 409 OperationNotAllowed "... exceeding approved ... quota".
CAPACITY_CODES = frozenset({"SkuNotAvailable", "AllocationFailed", "ZonalAllocationFailed",
                            "OverconstrainedAllocationRequest", "OverconstrainedZonalAllocationRequest"})
AUTH_CODES = frozenset({"AuthorizationFailed", "AuthenticationFailed", "InvalidAuthenticationToken",
                        "ExpiredAuthenticationToken", "InvalidAuthenticationTokenTenant", "LinkedAuthorizationFailed",
                        "invalid_client", "unauthorized_client"})
CONFIG_CODES = frozenset({"InvalidParameter", "BadRequest", "ImageNotFound", "PlatformImageNotFound",
                          "InvalidResourceReference", "NotFound", "ResourceNotFound", "ResourceGroupNotFound",
                          "SubscriptionNotFound", "InvalidSubscriptionId", "LocationRequired",
                          "LocationNotAvailableForResourceType", "MissingSubscriptionRegistration",
                          "VMMarketplaceInvalidInput", "MarketplacePurchaseEligibilityFailed",
                          "OperationNotAllowed"})  # without quota wording: e.g. no Spot for this size
THROTTLE_CODES = frozenset({"TooManyRequests", "SubscriptionRequestsThrottled"})


def arm_error(error: Any) -> tuple[list[str], str]:
    """Every ARM error code in the body (top level and details) and the top-level message."""
    odata = getattr(error, "error", None)
    codes: list[str] = []
    stack = [odata] if odata is not None else []
    while stack:
        item = stack.pop(0)
        if getattr(item, "code", None):
            codes.append(str(item.code))
        stack.extend(getattr(item, "details", None) or [])
    message = str(getattr(odata, "message", "") or "") if odata is not None else ""
    return codes, message or str(getattr(error, "message", "") or error)


def retry_after(error: Any) -> float:
    """The delay a throttled answer asks for; Azure's usual when it gives none."""
    response = getattr(error, "response", None)
    seconds = retry_after_s(response.headers if response is not None else None)
    return DEFAULT_RETRY_AFTER_S if seconds is None else seconds


def classify(error: BaseException) -> tuple[LaunchErrorKind, str, float | None]:
    """(kind, short human message, retry-after seconds) of an SDK exception."""
    if isinstance(error, AzureProviderError):
        return error.kind, str(error), None
    if isinstance(error, ImportError):
        return LaunchErrorKind.CONFIG, str(error), None
    exc = sdk().exceptions
    if isinstance(error, exc.ClientAuthenticationError):  # Entra ID refused the credential, or ARM said 401
        cause = error.__cause__  # azure-identity wraps "could not reach Entra ID" in an auth error
        if isinstance(cause, (exc.ServiceRequestError, exc.ServiceResponseError)):
            return classify(cause)
        codes, message = arm_error(error)
        status = error.status_code
        return LaunchErrorKind.AUTH, shorten(f"{status or ''} {codes[0] if codes else ''}: {message}".strip(" :")), None
    if isinstance(error, exc.HttpResponseError):
        status = error.status_code
        codes, message = arm_error(error)
        # A Failed LRO carries its status poll's 200: show only the code then.
        prefix = " ".join(filter(None, [str(status) if status and status >= 400 else "", codes[0] if codes else ""]))
        text = shorten(f"{prefix}: {message}" if prefix else message)
        if status == 429 or THROTTLE_CODES.intersection(codes):
            return LaunchErrorKind.THROTTLED, text, retry_after(error)
        if any("quota" in code.lower() for code in codes) or ("OperationNotAllowed" in codes and "quota" in message.lower()):
            return LaunchErrorKind.QUOTA, text, None
        for kind, known in (
            (LaunchErrorKind.AUTH, AUTH_CODES),
            (LaunchErrorKind.CAPACITY, CAPACITY_CODES),
            (LaunchErrorKind.CONFIG, CONFIG_CODES),
        ):
            if known.intersection(codes):
                return kind, text, None
        if status == 409:  # a conflict that is not a quota: another operation is in progress
            return LaunchErrorKind.TRANSIENT, text, None
        # Unknown codes: by status (a Failed LRO's unknown code counts as a 5xx: transient).
        return classify_http_status(status if status and status >= 400 else 500), text, None
    if isinstance(error, exc.ServiceRequestError):  # never reached Azure: DNS, refused, TLS
        if "CERTIFICATE_VERIFY_FAILED" in str(error):
            return LaunchErrorKind.CONFIG, shorten(f"TLS certificate not trusted (settings.ca_bundle?): {error}"), None
        return LaunchErrorKind.TRANSIENT, shorten(f"cannot reach Azure: {error}"), None
    if isinstance(error, exc.ServiceResponseError):  # sent, but no (complete) answer: timeout
        return LaunchErrorKind.TRANSIENT, shorten(f"no answer from Azure: {error}"), None
    return LaunchErrorKind.TRANSIENT, shorten(f"{type(error).__name__}: {error}"), None
