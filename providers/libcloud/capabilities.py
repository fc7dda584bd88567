"""What a Libcloud driver class can do, read once from its own ``create_node`` / ``list_nodes``
signatures: which argument carries our tags, which the cloud-init, whether it takes an
idempotency token, whether listing filters by tag on the server.

Why apart: this is the one place that knows how drivers differ; the client and provider ask it
instead of testing driver names.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass

#: Drivers whose tag/cloud-init arguments are not the common ex_metadata/ex_userdata.
_TAGS_ARG = {"gce": "ex_labels", "azure_arm": "ex_tags", "scaleway": None}
_USERDATA_ARG = {"gce": "ex_metadata:user-data", "outscale": "ex_user_data", "equinixmetal": "cloud_init"}
_TOKEN_ARGS = ("ex_clienttoken", "ex_client_token")


@dataclass(frozen=True)
class Capabilities:
    tags_arg: str | None  # create_node argument carrying our tags (a dict)
    userdata_arg: str | None  # "arg" or "arg:key" (the text goes in a dict under key)
    token_arg: str | None  # idempotency token argument (EC2 ClientToken)
    params: frozenset[str]  # create_node's named parameters
    any_kwargs: bool  # create_node takes **kwargs
    server_filter: bool  # list_nodes(ex_filters={"tag:K": v}) filters on the server (EC2 family)


@functools.lru_cache(maxsize=64)
def capabilities(driver_name: str, driver_type: type) -> Capabilities:
    """Read once per driver class from its own signatures (OpenStack's factory picks the class)."""
    create = inspect.signature(driver_type.create_node).parameters
    params = frozenset(n for n, p in create.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))
    any_kwargs = any(p.kind == p.VAR_KEYWORD for p in create.values())
    tags_arg = _TAGS_ARG.get(driver_name, "ex_metadata")
    userdata_arg = _USERDATA_ARG.get(driver_name, "ex_userdata")
    listing = inspect.signature(driver_type.list_nodes).parameters
    return Capabilities(
        tags_arg=tags_arg if tags_arg in params else None,
        userdata_arg=userdata_arg if userdata_arg and userdata_arg.split(":")[0] in params else None,
        token_arg=next((t for t in _TOKEN_ARGS if t in params), None),
        params=params,
        any_kwargs=any_kwargs,
        server_filter="ex_filters" in listing and driver_type.__module__ == "libcloud.compute.drivers.ec2",
    )
