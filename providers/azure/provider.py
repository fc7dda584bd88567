"""The Azure provider: launch, list and terminate a pool's VMs through ARM.

Why it reads as it does: launch begins every create and then awaits the long-running
operations together; every failure becomes a typed :class:`LaunchResult`; an auth failure drops
the pool's cached client so a rotated secret is picked up on the next call.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

from providers.azure.client import PoolClient, build_client
from providers.azure.errors import AzureProviderError, arm_error, classify
from providers.azure.sdk import sdk
from providers.azure.settings import Settings
from providers.azure.vm import enum_text, is_ours, vm_body, vm_state
from providers.base import (TAG_CLUSTER, TAG_NODE, TAG_POOL, CloudNode, CloudState, LaunchErrorKind, LaunchRequest,
                            LaunchResult, PoolSpec, Provider)

log = logging.getLogger("providers.azure")

# A Linux computer name (the node id is both the VM name and the host name): no '_' or '.'.
_COMPUTER_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?")


class AzureProvider(Provider):
    name = "azure"
    user_data_limit = 65535  # osProfile.customData: at most 65535 bytes once base64-decoded

    def __init__(self, state_dir: Any, cluster: str) -> None:
        self.cluster = cluster
        self._clients: dict[tuple[str, str], PoolClient] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AzureProvider(cluster={self.cluster!r}, pools={sorted({name for name, _ in self._clients})})"

    def _pool_client(self, pool: PoolSpec) -> PoolClient:
        """The pool's cached client; a new one if its settings changed. Raises on bad settings."""
        key = (pool.name, json.dumps(pool.settings, sort_keys=True, default=str))
        with self._lock:
            cached = self._clients.get(key)
            if cached is None:
                from pydantic import ValidationError

                try:
                    settings = Settings.model_validate(pool.settings)
                except ValidationError as error:
                    problems = "; ".join(
                        f"settings.{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}"
                        for item in error.errors()
                    )
                    raise AzureProviderError(f"pool {pool.name}: invalid settings: {problems}") from None
                cached = self._clients[key] = build_client(settings)
            return cached

    def _forget(self, pool: PoolSpec) -> None:
        """Drop the pool's cached client after an auth failure, so the next call re-reads the secret
        (rotated, or fixed by an admin). Not closed: another thread may still be using it."""
        with self._lock:
            for key in [key for key in self._clients if key[0] == pool.name]:
                del self._clients[key]

    # -- launch ----------------------------------------------------------------------------
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        results: dict[int, LaunchResult] = {}
        todo: list[tuple[int, LaunchRequest]] = []
        for index, request in enumerate(requests):
            problem = self._precheck(request)
            if problem:
                results[index] = self._failed(pool, request.node_id, LaunchErrorKind.CONFIG, problem)
            else:
                todo.append((index, request))
        if todo:
            try:
                pc = self._pool_client(pool)
            except (AzureProviderError, ImportError) as error:
                kind, message, _ = classify(error)
                for index, request in todo:
                    results[index] = self._failed(pool, request.node_id, kind, message)
            else:
                self._launch_all(pc, pool, todo, results)
                if any(result.error_kind is LaunchErrorKind.AUTH for result in results.values()):
                    self._forget(pool)
        return [results[index] for index in range(len(requests))]

    def _precheck(self, request: LaunchRequest) -> str | None:
        size = len(request.user_data.encode("utf-8"))
        if self.user_data_limit is not None and size > self.user_data_limit:
            return f"user data too large: {size} bytes, over Azure's custom data limit of {self.user_data_limit} bytes"
        if not _COMPUTER_NAME.fullmatch(request.node_id):
            return (
                f"node id {request.node_id!r} is not a valid Azure Linux VM/computer name "
                "(letters, digits and inner hyphens, at most 64): rename the pool"
            )
        return None

    def _launch_all(
        self, pc: PoolClient, pool: PoolSpec, todo: list[tuple[int, LaunchRequest]], results: dict[int, LaunchResult]
    ) -> None:
        # Begin every create (GET, PUT: seconds each, in request order), then wait on all the
        # pollers together: the minutes of provisioning overlap, each poller polls in its thread.
        begun = [self._begin_create(pc, pool, request) for _, request in todo]
        deadline = time.monotonic() + pc.settings.operation_timeout_s
        for (index, request), started in zip(todo, begun):
            if isinstance(started, LaunchResult):
                results[index] = started
            else:
                results[index] = self._await_create(pc, pool, request.node_id, started, deadline)

    def _begin_create(self, pc: PoolClient, pool: PoolSpec, request: LaunchRequest) -> Any:
        """The create's LRO poller, or a finished LaunchResult (VM already there, or an error)."""
        node_id = request.node_id
        settings = pc.settings
        exc = sdk().exceptions
        try:
            try:
                existing = pc.client.virtual_machines.get(settings.resource_group, node_id)
            except exc.ResourceNotFoundError as error:
                codes, _ = arm_error(error)
                if "ResourceGroupNotFound" in codes:
                    raise
                existing = None
            if existing is not None:
                return self._existing(pool, node_id, existing)
            body = vm_body(sdk().models, settings, pool, request)
            return pc.client.virtual_machines.begin_create_or_update(settings.resource_group, node_id, body)
        except Exception as error:  # noqa: BLE001 - every failure becomes a typed value
            return self._failed_from(pool, node_id, error)

    def _existing(self, pool: PoolSpec, node_id: str, vm: Any) -> LaunchResult:
        """A VM with this name already exists: ours from an earlier attempt, or a stranger."""
        tags = vm.tags or {}
        if tags.get(TAG_NODE) != node_id or tags.get(TAG_CLUSTER) != pool.cluster or tags.get(TAG_POOL) != pool.name:
            return self._failed(
                pool, node_id, LaunchErrorKind.CONFIG,
                f"a VM named {node_id} already exists in the resource group but is not this pool's node",
            )
        state = vm_state(vm.provisioning_state)
        if state is CloudState.FAILED:
            return self._failed(
                pool, node_id, LaunchErrorKind.CAPACITY,
                f"VM {node_id} exists in provisioning state {vm.provisioning_state} (an earlier create failed)",
            )
        if state is CloudState.STOPPING:
            return self._failed(pool, node_id, LaunchErrorKind.TRANSIENT, f"VM {node_id} is being deleted")
        log.info("pool=%s node=%s: VM already exists (%s); not creating it again", pool.name, node_id, vm.provisioning_state)
        return LaunchResult(node_id, True, provider_ref=vm.id)

    def _await_create(self, pc: PoolClient, pool: PoolSpec, node_id: str, poller: Any, deadline: float) -> LaunchResult:
        try:
            vm = poller.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as error:  # noqa: BLE001
            return self._failed_from(pool, node_id, error)
        if not poller.done():
            log.info("pool=%s node=%s: create still running after %.0f s; list_nodes will follow it",
                     pool.name, node_id, pc.settings.operation_timeout_s)
            return LaunchResult(node_id, True, provider_ref=pc.settings.vm_id(node_id))
        return LaunchResult(node_id, True, provider_ref=getattr(vm, "id", None) or pc.settings.vm_id(node_id))

    def _failed_from(self, pool: PoolSpec, node_id: str, error: BaseException) -> LaunchResult:
        kind, message, retry_after = classify(error)
        return self._failed(pool, node_id, kind, message, retry_after)

    @staticmethod
    def _failed(
        pool: PoolSpec, node_id: str, kind: LaunchErrorKind, message: str, retry_after: float | None = None
    ) -> LaunchResult:
        log.warning("pool=%s node=%s: launch failed (%s): %s", pool.name, node_id, kind.value, message)
        return LaunchResult(node_id, False, error_kind=kind, error=message, retry_after_s=retry_after)

    # -- list ------------------------------------------------------------------------------
    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        try:
            return self._list_nodes(pool)
        except Exception as error:
            if classify(error)[0] is LaunchErrorKind.AUTH:
                self._forget(pool)
            raise

    def _list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        pc = self._pool_client(pool)
        nodes = []
        # ARM's VM list has no server-side tag filter ($filter only takes virtualMachineScaleSet/id);
        # the resources API filters by one tag but returns no VM state. So: list the resource
        # group (paged by the SDK) and keep VMs tagged with our cluster and pool.
        for vm in pc.client.virtual_machines.list(pc.settings.resource_group):
            if not is_ours(vm, pool):
                continue
            extra: dict[str, Any] = {
                "size": enum_text(vm.hardware_profile.vm_size) if vm.hardware_profile else None,
                "location": vm.location,
                "provisioning_state": vm.provisioning_state,
                "spot": (enum_text(vm.priority) or "").lower() == "spot",
            }
            if extra["spot"]:
                extra["eviction_policy"] = enum_text(vm.eviction_policy)
            if vm.zones:
                extra["zones"] = list(vm.zones)
            # No IP here: it lives on the NIC resource (one Microsoft.Network GET per VM).
            nodes.append(CloudNode(vm.tags[TAG_NODE], pool.name, vm.id, vm_state(vm.provisioning_state), extra))
        return nodes

    # -- terminate -------------------------------------------------------------------------
    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        if not node_ids:
            return
        pc = self._pool_client(pool)
        begun = [self._begin_delete(pc, pool, node_id) for node_id in node_ids]  # then await all together
        deadline = time.monotonic() + pc.settings.operation_timeout_s
        errors: list[tuple[str, BaseException]] = []
        for node_id, started in zip(node_ids, begun):
            if isinstance(started, BaseException):
                errors.append((node_id, started))
            elif started is not None:
                try:
                    started.result(timeout=max(0.0, deadline - time.monotonic()))
                except Exception as error:  # noqa: BLE001
                    errors.append((node_id, error))
        if errors:
            summary = "; ".join(f"{node_id}: {classify(error)[1]}" for node_id, error in errors)
            kind = classify(errors[0][1])[0]
            log.warning("pool=%s: terminate failed for %s", pool.name, summary)
            if kind is LaunchErrorKind.AUTH:
                self._forget(pool)
            raise AzureProviderError(
                f"pool {pool.name}: terminate failed for {len(errors)} node(s): {summary}", kind
            ) from errors[0][1]

    def _begin_delete(self, pc: PoolClient, pool: PoolSpec, node_id: str) -> Any:
        """The delete's poller; None if the VM is already gone; the exception if a call failed."""
        exc = sdk().exceptions
        rg = pc.settings.resource_group
        try:
            # GET first: never delete a VM that merely shares a node's name but is not ours.
            try:
                vm = pc.client.virtual_machines.get(rg, node_id)
            except exc.ResourceNotFoundError as error:
                return error if "ResourceGroupNotFound" in arm_error(error)[0] else None
            if not is_ours(vm, pool) or (vm.tags or {}).get(TAG_NODE) != node_id:
                log.warning("pool=%s node=%s: VM of that name is not ours (tags %s); not deleting it",
                            pool.name, node_id, vm.tags)
                return None
            return pc.client.virtual_machines.begin_delete(rg, node_id)
        except exc.ResourceNotFoundError as error:
            if "ResourceGroupNotFound" in arm_error(error)[0]:
                return error
            return None  # deleted between our GET and DELETE
        except Exception as error:  # noqa: BLE001 - gathered and raised once all deletes ran
            return error

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for pc in clients:
            for closable in (pc.client, pc.credential):
                try:
                    closable.close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    log.debug("closing an Azure client failed", exc_info=True)
