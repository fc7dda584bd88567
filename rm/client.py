"""A small HTTP client for the API, used by the CLI, the demo and the benchmarks.

Why they all go through HTTP: what a pipeline or a scientist's script does is what we exercise;
a demo that called internals could hide a broken API.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from rm.auth import token_file
from rm.config import ClusterConfig


class ApiError(RuntimeError):
    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class ApiClient:
    def __init__(self, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s,
                                  headers={"Authorization": f"Bearer {token}"})

    def _check(self, response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self._check(self._http.get(path, params={k: v for k, v in params.items() if v is not None}))

    def get_text(self, path: str, **params: Any) -> str:
        """A non-JSON body (a CSV report), with the same error handling."""
        response = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        if response.status_code >= 400:
            self._check(response)
        return response.text

    def post(self, path: str, body: Any = None) -> Any:
        return self._check(self._http.post(path, json=body))

    def put(self, path: str, body: Any = None) -> Any:
        return self._check(self._http.put(path, json=body))

    def close(self) -> None:
        self._http.close()


def resolve_client(api: str | None, token: str | None, config: ClusterConfig | None) -> ApiClient:
    """API URL and token from options, then the environment, then the config and its state dir."""
    base = api or os.environ.get("RM_API")
    if not base:
        base = f"http://{config.api.host}:{config.api.port}" if config else "http://127.0.0.1:8000"
    token = token or os.environ.get("RM_TOKEN")
    if not token:
        path = token_file(config.state_dir if config else ".rm")
        if not Path(path).exists():
            raise ApiError(401, f"no token: pass --token, set RM_TOKEN, or run where {path} exists (rmctl up writes it)")
        token = Path(path).read_text().strip()
    return ApiClient(base, token)
