"""The Apache Libcloud provider: any Libcloud compute driver (EC2, OpenStack, GCE, ...) by name.

Why a generic driver: Libcloud reaches ~50 clouds through one API, so a site whose cloud has
no native driver here still bursts to it. What differs between drivers is read once from the
driver's own ``create_node`` signature (which argument carries our tags, which the cloud-init,
whether it takes an idempotency token), with a small table for the few drivers whose arguments
have other names (GCE labels and metadata ``user-data``, Azure ARM ``ex_tags``).

How our VMs are found again: the VM name is the node id and the VM carries the tags of
``tags_for`` (EC2 instance tags, OpenStack server metadata, GCE labels, Azure tags). EC2 is
filtered server-side (``tag:`` filters); other drivers list everything and filter here. A
driver that cannot tag at all is refused unless the admin sets ``match_by_name`` (then a VM is
ours when its name starts with ``<pool>-``; safe only if no other cluster shares the account).

Why one driver per pool *and thread*: a Libcloud driver keeps per-request state on its
connection (context, last action, one requests session) and is not thread-safe, while the
actuator runs up to four operations of one pool at once. Building a driver makes no API call.

Per-pool transport settings, applied to every connection the driver opens (OpenStack opens
one per service plus Keystone's): ``request_timeout_s`` (the requests timeout), ``max_retries``
(our own bounded retry of transient errors: 5xx, refused connections; never a read timeout,
never a throttle, and never a create on a driver without an idempotency token: a retried
create could make a second VM), and ``ca_bundle``, pinned on each connection rather than
through the process-wide ``libcloud.security.CA_CERTS_PATH``, so two pools with different CAs
can coexist. Libcloud's own retry (env ``LIBCLOUD_RETRY_FAILED_HTTP_REQUESTS``) stays off.

Why a package: one module per job, each read and changed alone, none importing Libcloud
before a client is built (``import providers.libcloud`` works without it):

- :mod:`.settings` - the pool's ``settings:`` model;
- :mod:`.capabilities` - what a driver class can do, read from its signatures;
- :mod:`.client` - building one hardened driver (secrets, timeout, CA bundle, retries);
- :mod:`.errors` - driver exceptions to :class:`LaunchErrorKind`, with secrets scrubbed;
- :mod:`.nodes` - a Libcloud node read in our terms, and the EC2 idempotency token;
- :mod:`.provider` - launch / list / terminate.
"""

from providers.libcloud.client import INSTALL_HINT
from providers.libcloud.errors import DEFAULT_THROTTLE_S, LibcloudCallError, classify
from providers.libcloud.nodes import client_token
from providers.libcloud.provider import LibcloudProvider
from providers.libcloud.settings import Settings

#: What ``providers.make_provider("libcloud", ...)`` instantiates.
PROVIDER = LibcloudProvider

__all__ = ["DEFAULT_THROTTLE_S", "INSTALL_HINT", "PROVIDER", "LibcloudCallError", "LibcloudProvider", "Settings",
           "classify", "client_token"]
