"""Helpers every cloud driver uses to turn a failed HTTP call into a ``LaunchResult``'s words and delay.

Why shared: the Azure, OpenStack and Libcloud drivers all read a throttled answer's
``Retry-After`` and all cut a cloud's error body down to one log line. One copy keeps them
alike: the header may be seconds or an HTTP-date (RFC 9110), and a header that cannot be read
falls back to the driver's default instead of raising out of error classification.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from typing import Any


def retry_after_s(headers: Mapping[str, Any] | None) -> float | None:
    """The delay a ``Retry-After`` header asks for, in seconds and never negative.

    None when there is no such header or it cannot be read: each driver knows what its cloud's
    throttling usually asks for and picks the default itself.
    """
    if not headers:
        return None
    value = next((v for k, v in headers.items() if str(k).lower() == "retry-after"), None)
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(str(value)).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def shorten(text: object, limit: int = 300, ellipsis: str = "…") -> str:
    """``text`` on one line (whitespace runs folded) and at most ``limit`` characters.

    Why: cloud error bodies carry newlines, stack traces and whole JSON documents; a launch
    error is shown in events, the dashboard and one log line.
    """
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - len(ellipsis)] + ellipsis
