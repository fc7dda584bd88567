"""Serve a fake cloud's WSGI app on a loopback port, over HTTP or HTTPS with a test CA.

Why a real server rather than patching the SDK's transport: the SDKs' own HTTP stacks
(azure-core's requests pipeline, keystoneauth's session, libcloud's connection) then run as
they do against a real cloud, and a manager started as a separate process (killed and
restarted by a test) reaches the same fake. HTTPS matters for Azure: azure-core refuses to
send a bearer token over plain HTTP, and MSAL wants an https authority. ``trustme`` makes a
throw-away CA; the test points the client at its bundle.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_args: object) -> None:  # the fakes log what matters themselves
        pass


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass(frozen=True)
class Served:
    base_url: str  # e.g. https://127.0.0.1:43121
    port: int
    ca_bundle: str | None  # PEM file the client must trust (HTTPS only)


@contextmanager
def serve(app: Callable, *, tls: bool = False, tmp_dir: str | Path | None = None) -> Iterator[Served]:
    """Serve ``app`` on 127.0.0.1 (a free port) until the block ends."""
    server = make_server("127.0.0.1", 0, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    ca_bundle = None
    if tls:
        import tempfile

        import trustme

        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        folder = Path(tmp_dir) if tmp_dir is not None else Path(tempfile.mkdtemp(prefix="fake-ca-"))
        ca_bundle = str(folder / "fake-cloud-ca.pem")
        ca.cert_pem.write_to_path(ca_bundle)
    port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield Served(f"{'https' if tls else 'http'}://127.0.0.1:{port}", port, ca_bundle)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
