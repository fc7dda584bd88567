"""The Libcloud provider: launch, list and terminate a pool's VMs through its hardened driver.

Why it reads as it does: a launch lists the pool's VMs once and reuses a node that already
exists (idempotent), passes an idempotency token where the driver takes one, and retries a
create only then; every launch failure is a typed :class:`LaunchResult`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

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
from providers.libcloud.client import Client, build_client
from providers.libcloud.errors import LibcloudCallError, classify, not_found
from providers.libcloud.nodes import client_token, node_extra, node_state, node_tags
from providers.libcloud.settings import Settings

log = logging.getLogger("providers.libcloud")


class LibcloudProvider(Provider):
    name = "libcloud"
    #: EC2's limit (16 KiB before base64), the smallest of the clouds Libcloud is used for here.
    user_data_limit = 16 * 1024

    def __init__(self, state_dir: str | Path, cluster: str) -> None:
        self.cluster = cluster
        self._clients: dict[tuple[str, str, int], Client] = {}
        self._lock = threading.Lock()
        self._warned: set[tuple[str, str]] = set()

    def __repr__(self) -> str:
        return f"LibcloudProvider(cluster={self.cluster!r}, pools={sorted({k[0] for k in self._clients})})"

    def _client(self, pool: PoolSpec) -> Client:
        key = (pool.name, repr(sorted(pool.settings.items())), threading.get_ident())
        with self._lock:
            client = self._clients.get(key)
        if client is not None:
            return client
        try:
            settings = Settings.model_validate(pool.settings)
        except ValidationError as error:  # the message names fields, never values (one might be a secret)
            fields = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
            raise LibcloudCallError(LaunchErrorKind.CONFIG, f"pool {pool.name}: invalid libcloud settings: {fields}") \
                from None
        client = build_client(pool, settings)
        self._check_capabilities(pool, client)
        with self._lock:
            self._clients[key] = client
        return client

    def _check_capabilities(self, pool: PoolSpec, client: Client) -> None:
        caps, driver = client.caps, client.settings.driver
        if caps.tags_arg is None and not client.settings.match_by_name:
            raise LibcloudCallError(LaunchErrorKind.CONFIG,
                                    f"pool {pool.name}: libcloud driver {driver!r} cannot tag VMs, so this pool's VMs "
                                    "cannot be told from others; set match_by_name: true if no other cluster uses "
                                    "this account with the same pool name")
        if caps.tags_arg is None:
            self._warn_once(pool, f"driver {driver!r} cannot tag VMs: pool VMs are matched by the name prefix "
                                  f"'{pool.name}-' only")
        if caps.userdata_arg is None:
            self._warn_once(pool, f"driver {driver!r} takes no user data: VMs get no cloud-init, so the agent must "
                                  "be baked into the image")

    def _warn_once(self, pool: PoolSpec, message: str) -> None:
        with self._lock:
            if (pool.name, message) in self._warned:
                return
            self._warned.add((pool.name, message))
        log.warning("pool=%s %s", pool.name, message)

    def _ours(self, client: Client, pool: PoolSpec) -> list[tuple[str, Any]]:
        """(node id, libcloud node) of this cluster's VMs in ``pool``."""
        if client.caps.server_filter:
            nodes = client.driver.list_nodes(ex_filters={f"tag:{TAG_CLUSTER}": pool.cluster,
                                                         f"tag:{TAG_POOL}": pool.name})
        else:
            nodes = client.driver.list_nodes()
        ours = []
        for node in nodes:
            if client.caps.tags_arg is None:
                if str(node.name).startswith(f"{pool.name}-"):
                    ours.append((str(node.name), node))
                continue
            tags = node_tags(node)
            if tags.get(TAG_CLUSTER) == pool.cluster and tags.get(TAG_POOL) == pool.name:
                ours.append((tags.get(TAG_NODE) or str(node.name), node))
        return ours

    # -- the interface ---------------------------------------------------------------------
    def launch(self, pool: PoolSpec, requests: Sequence[LaunchRequest]) -> list[LaunchResult]:
        results: list[LaunchResult | None] = [None] * len(requests)
        for i, request in enumerate(requests):
            size = len(request.user_data.encode())
            if self.user_data_limit is not None and size > self.user_data_limit:
                results[i] = self._failed(pool, request.node_id, LibcloudCallError(
                    LaunchErrorKind.CONFIG, f"user data is {size} bytes; the limit is {self.user_data_limit}"))
        todo = [i for i, result in enumerate(results) if result is None]
        if not todo:
            return [r for r in results if r is not None]
        client = None
        try:
            client = self._client(pool)
            existing = {node_id: node for node_id, node in self._ours(client, pool)
                        if node_state(node) != CloudState.TERMINATED}
        except Exception as error:
            failure = classify(error, client.secrets if client is not None else ())
            for i in todo:
                results[i] = self._failed(pool, requests[i].node_id, failure)
            return [r for r in results if r is not None]
        for i in todo:
            results[i] = self._launch_one(client, pool, requests[i], existing.get(requests[i].node_id))
        return [r for r in results if r is not None]

    def _launch_one(self, client: Client, pool: PoolSpec, request: LaunchRequest, existing: Any) -> LaunchResult:
        node_id = request.node_id
        if existing is not None:
            if node_state(existing) == CloudState.FAILED:
                return self._failed(pool, node_id, LibcloudCallError(
                    LaunchErrorKind.CAPACITY, f"VM {existing.id} exists but the cloud failed to build it"))
            return LaunchResult(node_id, True, provider_ref=str(existing.id))
        caps = client.caps
        kwargs = dict(client.create_kwargs, name=node_id)
        if caps.tags_arg:
            kwargs[caps.tags_arg] = tags_for(pool, node_id)
        if request.user_data and caps.userdata_arg:
            arg, _, key = caps.userdata_arg.partition(":")
            kwargs[arg] = {key: request.user_data} if key else request.user_data
        if caps.token_arg:
            kwargs[caps.token_arg] = client_token(pool, node_id)
        client.retry_enabled = caps.token_arg is not None  # a create is retried only when idempotent
        try:
            node = client.driver.create_node(**kwargs)
        except Exception as error:
            return self._failed(pool, node_id, classify(error, client.secrets))
        finally:
            client.retry_enabled = True
        node = node[0] if isinstance(node, list) else node
        return LaunchResult(node_id, True, provider_ref=str(node.id))

    def _failed(self, pool: PoolSpec, node_id: str, failure: LibcloudCallError) -> LaunchResult:
        log.warning("pool=%s node=%s launch failed (%s): %s", pool.name, node_id, failure.kind.value, failure)
        return LaunchResult(node_id, False, error_kind=failure.kind, error=str(failure),
                            retry_after_s=failure.retry_after_s)

    def list_nodes(self, pool: PoolSpec) -> list[CloudNode]:
        client = self._client(pool)
        try:
            ours = self._ours(client, pool)
        except Exception as error:
            raise classify(error, client.secrets) from None
        return [CloudNode(node_id=node_id, pool=pool.name, provider_ref=str(node.id), state=node_state(node),
                          extra=node_extra(node)) for node_id, node in ours]

    def terminate(self, pool: PoolSpec, node_ids: Sequence[str]) -> None:
        wanted = set(node_ids)
        if not wanted:
            return
        client = self._client(pool)
        try:
            ours = self._ours(client, pool)
        except Exception as error:
            raise classify(error, client.secrets) from None
        failures: list[tuple[str, LibcloudCallError]] = []
        for node_id, node in ours:  # one failure does not keep the others alive
            if node_id not in wanted or node_state(node) == CloudState.TERMINATED:
                continue
            try:
                client.driver.destroy_node(node)
            except Exception as error:
                if not not_found(error):  # already gone: done
                    failures.append((f"{node_id} ({node.id})", classify(error, client.secrets)))
        if failures:
            message = "; ".join(f"{what}: {failure}" for what, failure in failures)
            raise LibcloudCallError(failures[0][1].kind, f"pool {pool.name}: terminate failed for {message}",
                                    failures[0][1].retry_after_s)

    def close(self) -> None:
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            for connection in client.connections:
                session = getattr(getattr(connection, "connection", None), "session", None)
                if session is not None:
                    session.close()
