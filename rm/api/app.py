"""The HTTP API application (FastAPI): routers, the health probe, a request size limit, guards."""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rm.api import agents, cluster, costs, dashboard, jobs, policy
from rm.api.deps import Caller, caller
from rm.api.guards import guard
from rm.logs import install_token_masking
from rm.metrics import REGISTRY
from rm.throttle import RefusalThrottle

MAX_BODY_BYTES = 2 * 1024 * 1024


class BodySizeLimit:
    """Refuse bodies over ``limit`` bytes, whether announced by Content-Length or sent chunked.

    The body is read (up to the limit) before the application sees it, then replayed: our
    bodies are small JSON documents, and a refusal must leave nothing half-done.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = JSONResponse(status_code=413, content={"detail": f"request body over {self.limit} bytes"})
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.limit:
            await too_large(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def create_app(runtime: Any) -> FastAPI:
    app = FastAPI(title="hybrid-rm", version="0.1.0", openapi_url=None, docs_url=None, redoc_url=None,
                  description="Hybrid cloud-bursting elastic resource manager. Every endpoint but /healthz needs a bearer token.")
    app.state.runtime = runtime
    app.state.enrol_throttle = RefusalThrottle()

    guard(app)  # inside the size limit: its NUL check reads a body already bounded
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES)
    install_token_masking()

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        controller = runtime.controller
        return {"status": "ok", "ticks": controller.ticks if controller else 0}

    app.include_router(jobs.router)
    app.include_router(cluster.router)
    app.include_router(agents.router)
    app.include_router(costs.router)
    app.include_router(policy.router)
    app.include_router(dashboard.router)

    @app.get("/metrics", tags=["health"])
    def metrics(who: Caller = Depends(caller)) -> Response:
        """Prometheus text format; like every endpoint but /healthz it needs a token (any role)."""
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
    return app
