"""The OpenStack provider: launch, list and terminate a pool's Nova servers.

Why it reads as it does: a launch looks each node up first (idempotent), creates the missing
ones, then waits for all of them together; a server Nova fails to build is deleted and
reported with its fault; every launch failure is a typed :class:`LaunchResult`.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any

from providers.base import (
    TAG_CLUSTER,
    TAG_NODE,
    TAG_POOL,
    CloudNode,
    CloudState,
    LaunchErrorKind,
    LaunchRequest,
    LaunchResult,
    PoolSpec,
    Provider,
    tags_for,
)
from providers.openstack.client import PoolClient, connect
from providers.openstack.errors import Failure, build_fault_kind, classify
from providers.openstack.servers import fault_message, first_ip, regex_literal, server_state, tag_dict, tag_strings
from providers.openstack.settings import Settings

log = logging.getLogger("providers.openstack")

#: Nova's API schema caps ``user_data`` at 65535 characters of base64: 16383 groups of 3 bytes.
NOVA_USER_DATA_BASE64_MAX = 65535
USER_DATA_LIMIT = (NOVA_USER_DATA_BASE64_MAX // 4) * 3


class OpenStackProvider(Provider):
    name = "openstack"
    user_data_limit = USER_DATA_LIMIT

    def __init__(self, state_dir: Any, cluster: str) -> None:
        self.state_dir = state_dir
        self.cluster = cluster
        self._clients: dict[tuple[str, Settings], PoolClient] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenStackProvider(cluster={self.cluster!r}, pools={sorted({k[0] for k in self._clients})})"

    def _client(self, pool: PoolSpec) -> PoolClient:
        settings = Settings.model_validate(pool.settings)
        key = (pool.name, settings)
        with self._lock:
            client = self._clients.get(key)
            if client is None:
                client = self._clients[key] = PoolClient(settings, connect(settings))
            return client

    # -- launch ----------------------------------------------------------------------------
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        results: dict[str, LaunchResult] = {}
        todo = []
        for request in requests:
            size = len(request.user_data.encode("utf-8"))
            if size > USER_DATA_LIMIT:
                results[request.node_id] = self._failed(pool, request.node_id, Failure(LaunchErrorKind.CONFIG, (
                    f"user data too large: {size} bytes, over Nova's limit of {USER_DATA_LIMIT} bytes "
                    f"({NOVA_USER_DATA_BASE64_MAX} once base64-encoded)")))
            else:
                todo.append(request)
        if todo:
            try:
                client = self._client(pool)
                refs = client.resolve()
            except Exception as error:  # noqa: BLE001 - a launch reports every cloud error as a value
                failure = classify(error)
                for request in todo:
                    results[request.node_id] = self._failed(pool, request.node_id, failure)
            else:
                created = {}
                for request in todo:  # create them all first, then wait on all
                    try:
                        created[request.node_id] = self._create(client, pool, refs, request)
                    except Exception as error:  # noqa: BLE001
                        results[request.node_id] = self._failed(pool, request.node_id, classify(error))
                results.update(self._wait_active(client, pool, created))
        return [results[request.node_id] for request in requests]

    def _failed(self, pool: PoolSpec, node_id: str, failure: Failure) -> LaunchResult:
        log.warning("pool=%s node=%s launch failed (%s): %s", pool.name, node_id, failure.kind, failure.message)
        return LaunchResult(node_id, False, error_kind=failure.kind, error=failure.message,
                            retry_after_s=failure.retry_after_s)

    def _find(self, client: PoolClient, pool: PoolSpec, node_id: str) -> Any | None:
        """Our live server named ``node_id`` in this pool, if the cloud already has it (idempotent launch).

        A server of this node that Nova failed to build is not reused: it is deleted (if no
        delete is under way yet) and a new one is created.
        """
        tags = tag_strings(tags_for(pool, node_id))
        servers = client.conn.compute.servers(details=True, name=f"^{regex_literal(node_id)}$", tags=",".join(tags))
        live = None
        for server in servers:
            if server.name != node_id or tag_dict(server).get(TAG_NODE) != node_id or server.task_state == "deleting":
                continue
            if server.status == "ERROR":
                log.info("pool=%s node=%s deleting server %s left in ERROR: %s",
                         pool.name, node_id, server.id, fault_message(server))
                client.conn.compute.delete_server(server.id, ignore_missing=True)
            elif live is None:
                live = server
        return live

    def _create(self, client: PoolClient, pool: PoolSpec, refs: dict[str, str], request: LaunchRequest) -> Any:
        existing = self._find(client, pool, request.node_id)
        if existing is not None:
            log.info("pool=%s node=%s already exists as %s (%s): not creating another",
                     pool.name, request.node_id, existing.id, existing.status)
            return existing
        s = client.settings
        tags = tags_for(pool, request.node_id)
        attrs: dict[str, Any] = {
            "name": request.node_id,
            "flavor_id": refs["flavor"],
            "image_id": refs["image"],
            "networks": [{"uuid": refs["network"]}] if "network" in refs else "auto",
            "metadata": tags,
            "tags": tag_strings(tags),
        }
        if request.user_data:
            attrs["user_data"] = base64.b64encode(request.user_data.encode("utf-8")).decode("ascii")
        if s.key_name:
            attrs["key_name"] = s.key_name
        if s.security_groups:
            attrs["security_groups"] = [{"name": group} for group in s.security_groups]
        if s.availability_zone:
            attrs["availability_zone"] = s.availability_zone
        server = client.create_compute().create_server(**attrs)
        log.info("pool=%s node=%s created server %s", pool.name, request.node_id, server.id)
        return server

    def _wait_active(self, client: PoolClient, pool: PoolSpec, created: dict[str, Any]) -> dict[str, LaunchResult]:
        from openstack import exceptions as os_exc

        s, compute = client.settings, client.conn.compute
        deadline = time.monotonic() + s.build_timeout_s
        results = {}
        for node_id, server in created.items():
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                        interval=min(s.poll_interval_s, remaining), wait=remaining)
            except os_exc.ResourceFailure:
                results[node_id] = self._failed_build(client, pool, node_id, server)
                continue
            except os_exc.ResourceTimeout:
                log.info("pool=%s node=%s server %s still building after build_timeout_s=%.0f: reported launched; "
                         "the pool's boot_timeout_s takes over", pool.name, node_id, server.id, s.build_timeout_s)
            except os_exc.NotFoundException:
                results[node_id] = self._failed(pool, node_id, Failure(
                    LaunchErrorKind.TRANSIENT, f"server {server.id} vanished while it was building"))
                continue
            except Exception as error:  # noqa: BLE001 - the server exists: a polling error does not undo that
                log.warning("pool=%s node=%s polling server %s failed (%s): reported launched",
                            pool.name, node_id, server.id, classify(error).message)
            results[node_id] = LaunchResult(node_id, True, provider_ref=server.id)
        return results

    def _failed_build(self, client: PoolClient, pool: PoolSpec, node_id: str, server: Any) -> LaunchResult:
        """Nova gave up building ``server``: delete it (it must not leak) and say why."""
        reason = fault_message(server)
        kind = build_fault_kind(reason)
        try:
            client.conn.compute.delete_server(server.id, ignore_missing=True)
        except Exception as error:  # noqa: BLE001 - the listing shows it FAILED; orphan collection retries
            log.warning("pool=%s node=%s deleting errored server %s failed: %s",
                        pool.name, node_id, server.id, classify(error).message)
        return self._failed(pool, node_id, Failure(kind, f"build failed (server {server.id} deleted): {reason}"))

    # -- list ------------------------------------------------------------------------------
    def _ours(self, client: PoolClient, pool: PoolSpec) -> Iterable[tuple[str, Any]]:
        """(node id, server) of every server carrying this cluster's and pool's tags.

        The tag filter runs server-side; the check here also guards against a cloud that
        ignores an unknown filter (Nova below 2.26 silently does).
        """
        wanted = {TAG_CLUSTER: pool.cluster, TAG_POOL: pool.name}
        servers = client.conn.compute.servers(details=True, tags=",".join(tag_strings(wanted)))
        for server in servers:
            tags = tag_dict(server)
            if all(tags.get(k) == v for k, v in wanted.items()):
                yield tags.get(TAG_NODE) or server.name, server

    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        client = self._client(pool)
        nodes = []
        for node_id, server in self._ours(client, pool):
            state = server_state(server)
            flavor = server.flavor
            extra: dict[str, Any] = {
                "status": server.status,
                "flavor": getattr(flavor, "original_name", None) or getattr(flavor, "name", None)
                or getattr(flavor, "id", None),
                "ip": first_ip(server),
                "availability_zone": server.availability_zone,
                "created": server.created_at,
            }
            if server.task_state:
                extra["task_state"] = server.task_state
            if state == CloudState.FAILED:
                extra["fault"] = fault_message(server)
            nodes.append(CloudNode(node_id=node_id, pool=pool.name, provider_ref=server.id, state=state, extra=extra))
        return nodes

    # -- terminate -------------------------------------------------------------------------
    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        if not node_ids:
            return
        from openstack import exceptions as os_exc

        client = self._client(pool)
        wanted = set(node_ids)
        doomed = [(node_id, server) for node_id, server in self._ours(client, pool) if node_id in wanted]
        compute = client.conn.compute
        errors: list[tuple[str, BaseException]] = []
        deleting = []
        for node_id, server in doomed:
            try:
                compute.delete_server(server, ignore_missing=True)
                deleting.append((node_id, server))
            except Exception as error:  # noqa: BLE001 - try the others, raise at the end
                log.warning("pool=%s node=%s deleting server %s failed: %s",
                            pool.name, node_id, server.id, classify(error).message)
                errors.append((node_id, error))
        s = client.settings
        deadline = time.monotonic() + s.delete_timeout_s
        for node_id, server in deleting:
            remaining = max(deadline - time.monotonic(), 0.001)
            try:
                compute.wait_for_delete(server, interval=min(s.poll_interval_s, remaining), wait=remaining)
            except os_exc.ResourceTimeout as error:
                log.warning("pool=%s node=%s server %s still there after delete_timeout_s=%.0f",
                            pool.name, node_id, server.id, s.delete_timeout_s)
                errors.append((node_id, error))
            except Exception as error:  # noqa: BLE001
                log.warning("pool=%s node=%s waiting for server %s to go failed: %s",
                            pool.name, node_id, server.id, classify(error).message)
                errors.append((node_id, error))
        if errors:
            failed = ", ".join(node_id for node_id, _ in errors)
            raise RuntimeError(f"openstack pool {pool.name}: terminate failed for {failed}: "
                               f"{classify(errors[0][1]).message}") from errors[0][1]

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            try:
                client.conn.close()
            except Exception as error:  # noqa: BLE001
                log.warning("closing an OpenStack connection failed: %s", error)
