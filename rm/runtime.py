"""The runtime: wires broker, store, monitor, job service, actuator and controller together.

Why one object: ``rmctl up``, ``rmctl demo``, the benchmarks and the end-to-end tests all start
the same system the same way, and all stop it the same way: controller first, then every local
agent, then the embedded broker, so that nothing we started is left behind.

With ``ha.enabled`` several runtimes share one database and broker: each serves the API, an
elector thread decides which one leads, and only the leader's controller acts (behind the fence
of rm/leader.py). A standby that stops leaves the nodes alone; the leader destroys its local
agents as before, then releases the lease so a standby takes over at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path

import redis
import uvicorn
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from agents.app import make_app
from agents.settings import AgentSettings
from agents.tasks import TASK_NAMES
from agents.tls import with_ca_file
from rm.activity import ActivityTracker
from rm.actuator import Actuator
from rm.auth import ensure_local_token, seed_env_admin
from rm.broker import EmbeddedRedis
from rm.config import ClusterConfig, PoolConfig
from rm.controller import Controller
from rm.demand import queues_for_pool
from rm.election import Elector
from rm.jobs import JobService
from rm.leader import Fence, Lease
from rm.lifecycle import change_status
from rm.models import Node
from rm.monitor import EventMonitor
from rm.nodes import NodeKeeper
from rm.policy_admin import PolicyInvalid, adopt_since
from rm.states import LIVE, NodeStatus
from rm.store import Store
from providers import make_provider
from providers.base import LaunchRequest, PoolSpec
from providers.bootstrap import Enrolment, render_user_data
from rm.enrolment import issue_token

log = logging.getLogger("rm.runtime")

MONITOR_READY_S = 10.0


class Runtime:
    def __init__(self, config: ClusterConfig) -> None:
        self._config = config
        self.state_dir = Path(config.state_dir).resolve()
        self.embedded: EmbeddedRedis | None = None
        self.broker_url = ""
        self.controller: Controller | None = None
        self.store: Store | None = None
        self.monitor: EventMonitor | None = None
        self.actuator: Actuator | None = None
        self.broker: redis.Redis | None = None
        self.elector: Elector | None = None
        self.started_at = 0.0
        self.broker_ca_pem = ""
        self.instance_id = config.ha.instance_id or f"{socket.gethostname()}-{os.getpid()}"
        self._threads: list[threading.Thread] = []
        self._server: uvicorn.Server | None = None

    def config(self) -> ClusterConfig:
        return self._config

    def replace_config(self, config: ClusterConfig) -> None:
        """Use ``config`` from the next tick on: the controller reads ``config()`` every tick.

        Meant for policy and money settings (budgets, prices, bounds); what was wired at start
        (database, broker, pools' providers) keeps running as started.
        """
        log.info("configuration of cluster %s replaced; the next tick uses it", config.cluster)
        self._config = config

    # -- start -----------------------------------------------------------------------------
    def start(self) -> "Runtime":
        config = self._config
        self.state_dir.mkdir(parents=True, exist_ok=True)
        now = self.started_at = time.time()
        self.store = Store(config.database)
        self.store.upgrade_schema()
        self.token_path = ensure_local_token(self.store, self.state_dir, now)
        seed_env_admin(self.store, now)
        if config.ha.enabled:
            self.elector = self._make_elector()
            self.elector.start()
        if config.broker == "embedded":
            self.embedded = EmbeddedRedis(self.state_dir)
            self.broker_url = self.embedded.start()
        else:
            self.broker_url = with_ca_file(config.broker, config.agent.broker_ca_file)
        # read once: every agent's settings carry it, and a file gone later must not fail enrolments
        self.broker_ca_pem = Path(config.agent.broker_ca_file).read_text() if config.agent.broker_ca_file else ""
        agent = config.agent
        self.app = make_app(self.broker_url, visibility_timeout_s=agent.visibility_timeout_s,
                            restore_interval_s=agent.restore_interval_s, soft_shutdown_timeout_s=agent.soft_shutdown_timeout_s)
        self.broker = redis.Redis.from_url(self.broker_url, socket_timeout=10)
        self.tracker = ActivityTracker()
        self.monitor = EventMonitor(self.app)
        self.monitor.start()
        self.monitor.connected.wait(MONITOR_READY_S)
        self.jobs = JobService(self.store, self.app, config.cluster, registered=TASK_NAMES, allow_shell=config.agent.allow_shell,
                               pool_label_sets=[frozenset(p.labels) for p in config.pools], tracker=self.tracker,
                               leading=self.leading, guard=self._guard())
        self.actuator = self._make_actuator()
        self.keeper = NodeKeeper(self.config, self.actuator, self.tracker, self.launch_request, started_at=now,
                                 hearing=self.monitor.hearing)
        self.controller = Controller(self.config, self.store, self.broker, self.monitor, self.tracker,
                                     self.jobs, self.actuator, self.keeper, leading=self.leading)
        if self.elector is not None:
            self.elector.on_elected = self._on_elected
            if self.elector.leading():  # elected before the controller existed: adopt now
                self._on_elected()
        self._spawn(self.controller.run, "controller")
        log.info("hybrid-rm cluster %s started (broker %s, database %s)", config.cluster,
                 "embedded" if self.embedded else "external", config.database.split("://")[0])
        return self

    def _make_actuator(self) -> Actuator:
        config = self._config
        providers, specs = {}, {}
        by_name: dict[str, object] = {}
        for pool in config.pools:
            if pool.provider not in by_name:
                by_name[pool.provider] = make_provider(pool.provider, state_dir=self.state_dir, cluster=config.cluster)
            providers[pool.name] = by_name[pool.provider]
            specs[pool.name] = PoolSpec(pool.name, config.cluster, pool.slots, pool.boot_delay_s, dict(pool.settings))
        return Actuator(self.app, providers, specs, guard=self._guard())

    # -- leadership ------------------------------------------------------------------------
    def _make_elector(self) -> Elector:
        config = self._config
        lease = Lease(self.store, config.cluster, self.instance_id, config.ha.lease_for(config.policy.tick_s))
        fence = Fence(lease)
        fence.install(self.store)
        return Elector(lease, fence, config.cluster, every_s=config.policy.tick_s)

    def _on_elected(self) -> None:
        """Newly the leader: carry on with the policy the cluster ran under, then tick at once."""
        try:
            with self.store.session() as session:
                adopted = adopt_since(session, self.started_at, self._config)
        except (SQLAlchemyError, PolicyInvalid) as error:
            log.warning("instance %s could not adopt the run-time policy: %s; it keeps its file's policy",
                        self.instance_id, error)
            adopted = None
        if adopted is not None:
            config, version = adopted
            log.info("instance %s adopts policy version %s, applied at run time before it took over",
                     self.instance_id, version)
            self.replace_config(config)
        self.controller.wake()

    def _guard(self):  # noqa: ANN202 - Callable[[str], None] | None
        return self.elector.fence.check if self.elector is not None else None

    def leading(self) -> bool:
        """Whether this instance acts: always without high availability, else while it holds the lease."""
        return self.elector is None or self.elector.leading()

    def leadership(self) -> dict:
        """Who leads and under which epoch, as ``GET /api/v1/status`` shows it."""
        if self.elector is None:
            return {"ha": False, "instance": self.instance_id, "leading": True, "holder": self.instance_id, "epoch": None}
        lease = self.elector.lease.read()
        return {"ha": True, "instance": self.instance_id, "leading": self.leading(),
                "holder": lease.holder or None if lease else None, "epoch": lease.epoch if lease else None,
                "expires_at": lease.expires_at if lease else None, "lease_s": self.elector.lease.lease_s}

    def agent_settings(self, pool: PoolConfig, node_id: str) -> AgentSettings:
        config, agent = self._config, self._config.agent
        local = pool.provider == "local"
        spot = pool.provider == "azure" and bool((pool.settings.get("spot") or {}).get("enabled"))
        return AgentSettings(
            node_id=node_id, pool=pool.name, cluster=config.cluster,
            broker_url=self.broker_url if local else (agent.broker_url or self.broker_url),
            queues=queues_for_pool(config.cluster, pool.labels), slots=pool.slots,
            boot_delay_s=pool.boot_delay_s if local else 0.0,
            visibility_timeout_s=agent.visibility_timeout_s, lease_renew_s=agent.lease_renew_s,
            restore_interval_s=agent.restore_interval_s, soft_shutdown_timeout_s=agent.soft_shutdown_timeout_s,
            preemption_watch="azure" if spot else "",
            broker_ca_pem=self.broker_ca_pem,
            allow_shell=agent.allow_shell,
        )

    def advertised_api_url(self) -> str:
        """Where a cloud VM reaches the API to enrol."""
        api = self._config.api
        return api.advertise_url or getattr(self, "api_url", None) or f"http://{api.host}:{api.port}"

    def launch_request(self, session, pool: PoolConfig, node_id: str, now: float) -> LaunchRequest:  # noqa: ANN001
        """What a provider needs to create a node: a local agent's settings, or a VM's cloud-init.

        A cloud VM's user data carries a one-time enrolment token valid until its boot timeout
        (plus a minute for clock skew), never the broker's credentials. Raises
        ``UserDataTooLarge`` when the cloud-init does not fit the provider's limit.
        """
        settings = self.agent_settings(pool, node_id)
        if pool.provider == "local":
            return LaunchRequest(node_id, settings)
        token = issue_token(session, node_id, now, pool.boot_timeout_s + 60)
        enrolment = Enrolment(self.advertised_api_url(), node_id, token, self._config.agent.soft_shutdown_timeout_s)
        limit = self.actuator.providers[pool.name].user_data_limit
        return LaunchRequest(node_id, settings, render_user_data(pool.bootstrap, enrolment, limit))

    def _spawn(self, target, name: str) -> None:  # noqa: ANN001 - a thread body
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def serve_api(self) -> str:
        """Serve the HTTP API in a background thread; returns its base URL."""
        from rm.api.app import create_app

        api = self._config.api
        server = uvicorn.Server(uvicorn.Config(create_app(self), host=api.host, port=api.port,
                                               log_level="warning", lifespan="off"))
        self._server = server
        self._spawn(server.run, "api")
        deadline = time.monotonic() + 15
        while not server.started and time.monotonic() < deadline:
            if not self._threads[-1].is_alive():
                raise RuntimeError(f"the API could not start on {api.host}:{api.port} (port in use?)")
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1] if server.servers else api.port
        self.api_url = f"http://{api.host}:{port}"
        return self.api_url

    # -- stop ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop serving and deciding, destroy every local agent, stop the embedded broker.

        Safe after a partial start: each part is stopped only if it was started.
        """
        if self._server is not None:
            self._server.should_exit = True
        if self.controller is not None:
            self.controller.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        try:
            if self.actuator is not None and self.store is not None and self.leading():
                self._release_local_nodes()  # a standby's agents are the leader's: it leaves them
        finally:  # whatever that met (a lost lease, a stopped database), the rest must not leak
            self._stop_parts()
        log.info("hybrid-rm cluster %s stopped", self._config.cluster)

    def _stop_parts(self) -> None:
        if self.elector is not None:
            self.elector.stop()
        if self.monitor is not None:
            self.monitor.stop()
        if self.actuator is not None:
            self.actuator.close()
        if self.broker is not None:
            self.broker.close()
        if self.embedded is not None:
            self.embedded.stop()
        if self.store is not None:
            self.store.dispose()

    def _release_local_nodes(self) -> None:
        """Local agents cannot outlive the manager that runs them: destroy them, record why."""
        local_pools = {p.name for p in self._config.pools if p.provider == "local"}
        now = time.time()
        with self.store.session() as session:
            nodes = list(session.scalars(select(Node).where(Node.status.in_([s.value for s in LIVE]),
                                                             Node.pool.in_(local_pools))))
        by_pool: dict[str, list[str]] = {}
        for node in nodes:
            by_pool.setdefault(node.pool, []).append(node.id)
        threads = [threading.Thread(target=self.actuator.terminate_now, args=(pool, ids)) for pool, ids in by_pool.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with self.store.session() as session:
            for node in session.scalars(select(Node).where(Node.id.in_([n.id for n in nodes]))):
                _end_at_shutdown(session, node, now)


S = NodeStatus
#: The lifecycle edges a node walks when the manager stops and destroys its local agent.
PATH_TO_TERMINATED: dict[NodeStatus, tuple[NodeStatus, ...]] = {
    S.REQUESTED: (S.TERMINATED,),
    S.PROVISIONING: (S.TERMINATING, S.TERMINATED),
    S.BOOTING: (S.TERMINATING, S.TERMINATED),
    S.IDLE: (S.DRAINING, S.TERMINATING, S.TERMINATED),
    S.BUSY: (S.DRAINING, S.TERMINATING, S.TERMINATED),
    S.DRAINING: (S.TERMINATING, S.TERMINATED),
    S.TERMINATING: (S.TERMINATED,),
}


def _end_at_shutdown(session, node: Node, now: float) -> None:  # noqa: ANN001 - a Session
    for status in PATH_TO_TERMINATED.get(NodeStatus(node.status), ()):
        change_status(session, node, status, "the manager stopped and destroyed its local agent", now)
