"""The HTTP API application (FastAPI): routers, the health probe, a request size limit."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rm.api import cluster, jobs

MAX_BODY_BYTES = 2 * 1024 * 1024


def create_app(runtime: Any) -> FastAPI:
    app = FastAPI(title="hybrid-rm", version="0.1.0",
                  description="Hybrid cloud-bursting elastic resource manager. Every endpoint but /healthz needs a bearer token.")
    app.state.runtime = runtime

    @app.middleware("http")
    async def limit_body(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette middleware
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            return JSONResponse(status_code=413, content={"detail": f"request body over {MAX_BODY_BYTES} bytes"})
        return await call_next(request)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        controller = runtime.controller
        return {"status": "ok", "ticks": controller.ticks if controller else 0}

    app.include_router(jobs.router)
    app.include_router(cluster.router)
    return app
