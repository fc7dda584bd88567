"""Where an agent's settings come from: the environment (local nodes) or enrolment (cloud VMs).

Why three sources: a local node gets its settings from the manager's process in
``RM_AGENT_SETTINGS``; a cloud VM has only the bootstrap file its cloud-init wrote (API URL,
node id, one-time token) and trades it once for its settings, which it keeps in
``RM_AGENT_SETTINGS_FILE`` (root-only) so that a restarted agent does not enrol again.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import httpx
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from agents.settings import AgentSettings

log = logging.getLogger("agents.enrol")

SETTINGS_ENV = "RM_AGENT_SETTINGS"
SETTINGS_FILE_ENV = "RM_AGENT_SETTINGS_FILE"
BOOTSTRAP_ENV = "RM_AGENT_BOOTSTRAP"
ENROL_PATIENCE_S = 600.0  # the API may still be starting, or the network not up yet


class EnrolmentRefused(RuntimeError):
    """The manager refused the token: it is wrong, used, expired, or the node was given up."""


def _retryable(error: BaseException) -> bool:
    if isinstance(error, httpx.HTTPStatusError):
        return error.response.status_code >= 500 or error.response.status_code == 429
    return isinstance(error, httpx.TransportError)


@retry(retry=retry_if_exception(_retryable), wait=wait_exponential(multiplier=0.5, max=15),
       stop=stop_after_delay(ENROL_PATIENCE_S), reraise=True)
def _post_enrolment(bootstrap: dict, verify: bool | str) -> dict:
    url = f"{bootstrap['api_url'].rstrip('/')}/api/v1/agents/{bootstrap['node_id']}/enrol"
    response = httpx.post(url, headers={"Authorization": f"Bearer {bootstrap['token']}"}, timeout=15, verify=verify)
    if response.status_code in (401, 403):
        raise EnrolmentRefused(f"node {bootstrap['node_id']}: the manager refused enrolment: "
                               f"{response.json().get('detail', response.status_code)}")
    response.raise_for_status()
    return response.json()["settings"]


def enrol(bootstrap_path: str | Path) -> AgentSettings:
    """Exchange the bootstrap file's one-time token for this node's settings."""
    bootstrap = json.loads(Path(bootstrap_path).read_text())
    verify: bool | str = True
    if bootstrap.get("ca_bundle_pem"):
        ca = Path(tempfile.mkdtemp(prefix="rm-ca-")) / "api-ca.pem"
        ca.write_text(bootstrap["ca_bundle_pem"])
        verify = str(ca)
    log.info("node=%s enrolling with the manager at %s", bootstrap["node_id"], bootstrap["api_url"])
    data = _post_enrolment(bootstrap, verify)
    return AgentSettings.from_json(json.dumps(data))


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)


def load_settings(environ: dict[str, str] | None = None) -> AgentSettings:
    """Settings from the environment, the kept settings file, or a fresh enrolment."""
    environ = os.environ if environ is None else environ
    if environ.get(SETTINGS_ENV):
        return AgentSettings.from_json(environ[SETTINGS_ENV])
    kept = Path(environ[SETTINGS_FILE_ENV]) if environ.get(SETTINGS_FILE_ENV) else None
    if kept is not None and kept.exists():
        return AgentSettings.from_json(kept.read_text())
    if not environ.get(BOOTSTRAP_ENV):
        raise SystemExit(f"neither {SETTINGS_ENV} nor {BOOTSTRAP_ENV} is set: the agent needs its settings "
                         "(node id, pool, broker, queues) or a bootstrap file to enrol with")
    settings = enrol(environ[BOOTSTRAP_ENV])
    if kept is not None:
        _write_private(kept, settings.to_json())
    return settings
