"""Our node as an ARM VirtualMachine, and an ARM VirtualMachine read back in our terms.

Why apart from the provider: this is the data mapping (the PUT body's shape, the tags that
make a VM ours, provisioning states to :class:`CloudState`), with no call to Azure; the
provider decides when to send it.
"""

from __future__ import annotations

import base64
from typing import Any

from providers.azure.settings import Settings
from providers.base import TAG_CLUSTER, TAG_NODE, TAG_POOL, CloudState, LaunchRequest, PoolSpec, tags_for

NETWORK_API_VERSION = "2022-11-01"  # Microsoft.Network API used for the inline NIC


# -- state mapping -------------------------------------------------------------------------
# provisioningState only: a Spot VM evicted with Deallocate stays "Succeeded" and shows
# PowerState/deallocated in its instance view, which list_nodes does not fetch (one extra GET
# per VM per tick). Such a node's agent has already left warmly (agents/scheduled_events.py)
# and its heartbeats stop, so the manager marks it lost and terminates it.
_STATES = {
    "creating": CloudState.PENDING,
    "updating": CloudState.PENDING,
    "migrating": CloudState.PENDING,
    "succeeded": CloudState.RUNNING,
    "deleting": CloudState.STOPPING,
    "failed": CloudState.FAILED,
    "canceled": CloudState.FAILED,
}


def vm_state(provisioning_state: str | None) -> CloudState:
    return _STATES.get((provisioning_state or "").lower(), CloudState.UNKNOWN)


def enum_text(value: Any) -> Any:
    """The plain string of an SDK enum value (``VirtualMachineSizeTypes`` etc.)."""
    return getattr(value, "value", value)


def is_ours(vm: Any, pool: PoolSpec) -> bool:
    tags = vm.tags or {}
    return tags.get(TAG_CLUSTER) == pool.cluster and tags.get(TAG_POOL) == pool.name and bool(tags.get(TAG_NODE))


# -- the create body -----------------------------------------------------------------------
def vm_body(models: Any, settings: Settings, pool: PoolSpec, request: LaunchRequest) -> Any:
    """The VirtualMachine to PUT: Linux, inline NIC, self-deleting disk and NIC, our tags."""
    node_id = request.node_id
    if settings.image is not None:
        image = models.ImageReference(
            publisher=settings.image.publisher, offer=settings.image.offer,
            sku=settings.image.sku, version=settings.image.version,
        )
    else:
        image = models.ImageReference(id=settings.image_id)
    os_disk = models.OSDisk(create_option="FromImage", delete_option="Delete", disk_size_gb=settings.os_disk_size_gb)
    os_profile = models.OSProfile(
        computer_name=node_id,
        admin_username=settings.admin_username,
        custom_data=base64.b64encode(request.user_data.encode("utf-8")).decode("ascii") if request.user_data else None,
        linux_configuration=models.LinuxConfiguration(
            disable_password_authentication=True,
            ssh=models.SshConfiguration(public_keys=[models.SshPublicKey(
                path=f"/home/{settings.admin_username}/.ssh/authorized_keys", key_data=settings.ssh_public_key,
            )]),
        ),
    )
    nic = models.VirtualMachineNetworkInterfaceConfiguration(
        name=f"{node_id}-nic",
        properties=models.VirtualMachineNetworkInterfaceConfigurationProperties(
            primary=True,
            delete_option="Delete",
            ip_configurations=[models.VirtualMachineNetworkInterfaceIPConfiguration(
                name="ipconfig1",
                properties=models.VirtualMachineNetworkInterfaceIPConfigurationProperties(
                    primary=True, subnet=models.SubResource(id=settings.subnet_id),
                ),
            )],
        ),
    )
    properties = models.VirtualMachineProperties(
        hardware_profile=models.HardwareProfile(vm_size=settings.vm_size),
        storage_profile=models.StorageProfile(image_reference=image, os_disk=os_disk),
        os_profile=os_profile,
        network_profile=models.NetworkProfile(
            network_api_version=NETWORK_API_VERSION, network_interface_configurations=[nic],
        ),
    )
    if settings.spot.enabled:
        properties.priority = "Spot"
        properties.eviction_policy = settings.spot.eviction_policy
        properties.billing_profile = models.BillingProfile(max_price=settings.spot.max_price)
    return models.VirtualMachine(location=settings.location, tags=tags_for(pool, node_id), properties=properties)
