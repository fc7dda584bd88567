"""What authentication costs a request: latency of the auth paths through a live manager.

Starts a real manager (embedded Redis, SQLite, uvicorn on a free port, no agents), then times N
sequential requests over HTTP keep-alive for each path: ``healthz`` (no auth at all, the floor),
``bearer`` (a valid token: hash + one indexed lookup), ``cookie`` (a dashboard session: hash +
join), ``unauthorized`` (an unknown token, 401), ``enrol_refused`` (an unknown bootstrap token:
401 plus an event row) and ``throttled`` (the 429 a client gets after 10 refusals a minute).
Each path gets its own loopback source address, so the throttle counts only its own refusals.
Prints JSON: p50/p95 in milliseconds per path (median over ``--runs``).

Usage: python bench/auth.py [--runs 1] [--requests 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.repeat import summarize  # noqa: E402
from rm.auth import Role, create_token  # noqa: E402
from rm.config import parse_config  # noqa: E402
from rm.logs import setup_logging  # noqa: E402
from rm.runtime import Runtime  # noqa: E402


def _percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return round(cuts[49] * 1000, 3), round(cuts[94] * 1000, 3)


def _time(client: httpx.Client, method: str, path: str, expected: int, n: int, **request: object) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        response = client.request(method, path, **request)
        samples.append(time.perf_counter() - started)
        assert response.status_code == expected, (path, response.status_code, response.text[:200])
    return samples


def _client(url: str, source: str, **options: object) -> httpx.Client:
    return httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address=source), timeout=30, **options)


def one_run(requests: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="rm-bench-auth-") as tmp:
        rt = Runtime(parse_config({
            "cluster": "bench", "database": f"sqlite:///{tmp}/rm.db", "broker": "embedded", "state_dir": tmp,
            "api": {"host": "127.0.0.1", "port": 0},
            "pools": [{"name": "onprem", "provider": "local", "min_nodes": 0, "max_nodes": 0}]}))
        rt.start()
        try:
            url = rt.serve_api()
            token = create_token(rt.store, "bench", Role.VIEWER, time.time())
            auth = {"Authorization": f"Bearer {token}"}
            figures: dict[str, float] = {}
            wrong = {"headers": {"Authorization": "Bearer wrong-" + "x" * 40}}
            with _client(url, "127.0.0.2") as plain, _client(url, "127.0.0.3") as browser:
                browser.get("/", params={"token": token})  # a dashboard session: the cookie path
                cases = {
                    "healthz": (plain, "GET", "/healthz", 200, {}),
                    "bearer": (plain, "GET", "/api/v1/whoami", 200, {"headers": auth}),
                    "cookie": (browser, "GET", "/api/v1/whoami", 200, {}),
                    "unauthorized": (plain, "GET", "/api/v1/whoami", 401, wrong),
                }
                for name, (client, method, path, expected, request) in cases.items():
                    figures[f"{name}_p50_ms"], figures[f"{name}_p95_ms"] = _percentiles(
                        _time(client, method, path, expected, requests, **request))
            refused = []
            for index in range(requests):  # each refusal from its own address and connection: never throttled
                with _client(url, f"127.0.{4 + index // 250}.{index % 250 + 1}") as vm:
                    refused += _time(vm, "POST", "/api/v1/agents/bench-node/enrol", 401, 1, **wrong)
            figures["enrol_refused_p50_ms"], figures["enrol_refused_p95_ms"] = _percentiles(refused)
            with _client(url, "127.1.0.1") as guesser:
                _time(guesser, "POST", "/api/v1/agents/bench-node/enrol", 401, 10, **wrong)
                figures["throttled_p50_ms"], figures["throttled_p95_ms"] = _percentiles(
                    _time(guesser, "POST", "/api/v1/agents/bench-node/enrol", 429, requests, **wrong))
            return figures
        finally:
            rt.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    setup_logging(level="ERROR")
    runs = [one_run(args.requests) for _ in range(args.runs)]
    print(json.dumps({"benchmark": "auth", "requests_per_path": args.requests, "runs": args.runs,
                      "median": summarize(runs), "each": runs}, indent=2))


if __name__ == "__main__":
    main()
