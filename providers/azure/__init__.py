"""The Azure driver: one Linux VM per node, created with ``azure-mgmt-compute`` through ARM.

Why these choices:

* **Self-contained VMs.** The NIC is declared inline in the VM's ``network_profile`` (and both NIC
  and OS disk carry ``deleteOption: Delete``), so one ARM PUT creates everything a node needs and
  one DELETE removes it all: no orphaned NICs or disks to collect, no Microsoft.Network client.
* **Idempotent launch.** The VM name is the node id. Launch first GETs the VM: if it exists with
  our node tag (a create that timed out after ARM accepted it, a manager restarted mid-launch) it
  is reported ok and no second PUT is sent.
* **Await the long-running operation.** ``begin_create_or_update`` returns an LRO poller; launch
  waits on it (in the actuator's worker thread, never the controller loop) because Azure reports
  ``AllocationFailed`` and friends only there. All VMs of one call are begun first and then
  awaited together (each poller polls in its own thread), so ten VMs take about as long as one.
* **Errors are values.** ARM error codes (from the synchronous answer or from a Failed LRO) are
  mapped to :class:`LaunchErrorKind`; ``list_nodes``/``terminate`` raise and the actuator retries.
* **Secrets stay out.** Settings name the environment variable holding a service principal's
  secret (``client_secret_env``); the value is read when the client is built and never stored
  in settings, logs, reprs or error messages.

Why a package: each concern is a module with one job, so a change to one (a new ARM error
code, a new setting) is read and reviewed alone:

* :mod:`.settings` - the pool's ``settings:`` model (validated when the config loads);
* :mod:`.sdk` - the one place the Azure SDK is imported, lazily, so ``import providers.azure``
  stays cheap and works on a manager without the Azure extra installed;
* :mod:`.client` - building a pool's credential and ARM client;
* :mod:`.errors` - ARM errors to :class:`LaunchErrorKind`;
* :mod:`.vm` - our node as an ARM VM body, and an ARM VM read back in our terms;
* :mod:`.provider` - launch / list / terminate.
"""

from providers.azure.errors import AzureProviderError
from providers.azure.provider import AzureProvider
from providers.azure.settings import MarketplaceImage, Settings, SpotSettings

#: What ``providers.make_provider("azure", ...)`` instantiates.
PROVIDER = AzureProvider

__all__ = ["PROVIDER", "AzureProvider", "AzureProviderError", "MarketplaceImage", "Settings", "SpotSettings"]
