"""The OpenStack provider: a node is a Nova server, found again by its server tags.

Why it looks like this:

- One ``openstack.connect`` connection per pool, built from the pool's ``settings:`` (a
  clouds.yaml cloud, or explicit Keystone credentials whose secret is read from an environment
  variable), with an explicit request timeout and a bounded retry count. Compute is pinned to
  microversion 2.52, the first that accepts ``tags`` when a server is created, so the server
  tag filter of the listing (``GET /servers/detail?tags=...``, 2.26+) finds exactly our VMs.
- The SDK is imported only when a client is built: ``import providers.openstack`` costs
  nothing and works without openstacksdk.
- The create POST is never retried by the SDK (keystoneauth retries a *read* timeout as a
  "connect" failure, which would boot a second server with the same name); instead a launch
  is idempotent: it first looks the node up by name and node tag and reuses what it finds.
- A launch waits for ACTIVE (or ERROR) up to ``build_timeout_s``. A server that ends in ERROR
  is deleted (it must not leak) and reported with the fault Nova gives ("No valid host was
  found" is a capacity problem). A server still building at the deadline is reported launched:
  the manager's ``boot_timeout_s`` takes over from there.
- Throttling (429) is never retried inside the SDK: the controller gets ``retry_after_s`` and
  does its own backoff, instead of an actuator thread sleeping out the Retry-After.

Why a package: one module per job, so each is read and changed alone:

- :mod:`.settings` - the pool's ``settings:`` model (pydantic only, no SDK);
- :mod:`.client` - the SDK import, the pool's connection and its resolved flavor/image/network;
- :mod:`.errors` - SDK and keystoneauth exceptions to :class:`LaunchErrorKind`;
- :mod:`.servers` - a Nova server read in our terms (tags, state, address, fault);
- :mod:`.provider` - launch / list / terminate.
"""

from providers.openstack.errors import Failure, OpenStackSetupError, classify
from providers.openstack.provider import NOVA_USER_DATA_BASE64_MAX, USER_DATA_LIMIT, OpenStackProvider
from providers.openstack.settings import AuthSettings, Settings

#: What ``providers.make_provider("openstack", ...)`` instantiates.
PROVIDER = OpenStackProvider

__all__ = ["NOVA_USER_DATA_BASE64_MAX", "PROVIDER", "USER_DATA_LIMIT", "AuthSettings", "Failure", "OpenStackProvider",
           "OpenStackSetupError", "Settings", "classify"]
