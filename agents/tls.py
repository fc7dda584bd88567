"""Broker over TLS (``rediss://``): the URL must demand a verified certificate, and the CA that
signs the broker's certificate travels with the agent's settings.

Why the URL must carry ``ssl_cert_reqs=required``: redis-py and Celery accept a ``rediss://`` URL
without it and then (depending on the version) either refuse to start or connect without
verifying the server, which is encryption to whoever answers. We refuse the ambiguity at config
time. Why the CA as PEM text in the settings: a cloud VM has no file of the manager's; the agent
writes the PEM it received to a private file and points the URL's ``ssl_ca_certs`` at it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

TLS_SCHEME = "rediss"
CERT_REQS = "ssl_cert_reqs"
CA_CERTS = "ssl_ca_certs"


def unverified_tls(url: str) -> bool:
    """True for a ``rediss://`` URL that does not demand a verified certificate."""
    parts = urlsplit(url)
    return parts.scheme == TLS_SCHEME and dict(parse_qsl(parts.query)).get(CERT_REQS, "").lower() != "required"


def with_ca_file(url: str, ca_file: str | Path | None) -> str:
    """``url`` verifying the broker against ``ca_file`` (replacing any earlier CA); others unchanged."""
    parts = urlsplit(url)
    if parts.scheme != TLS_SCHEME or not ca_file:
        return url
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != CA_CERTS] + [(CA_CERTS, str(ca_file))]
    return urlunsplit(parts._replace(query=urlencode(query)))


def write_ca(pem: str, directory: str | Path | None = None) -> Path:
    """Write the broker's CA to a file only this user reads; returns its path."""
    folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="rm-broker-ca-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "broker-ca.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(pem)
    return path


def agent_broker_url(broker_url: str, ca_pem: str, directory: str | Path | None = None) -> str:
    """The URL an agent connects with: its own copy of the CA when one was sent."""
    return with_ca_file(broker_url, write_ca(ca_pem, directory)) if ca_pem and broker_url.startswith("rediss:") else broker_url
