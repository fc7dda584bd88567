"""Guards around the whole app: the API documentation behind a token, and security headers.

Why the docs need a token: the OpenAPI spec maps every route and parameter of a system that
holds cloud credentials; only ``/healthz`` is for anyone. FastAPI's own ``/openapi.json``,
``/docs`` and ``/redoc`` are turned off in :func:`rm.api.app.create_app` and served here behind
the same bearer/cookie check as every endpoint (a signed-in dashboard session opens them too).

Why the headers on every response: ``nosniff`` keeps a JSON error from being run as a script,
``no-referrer`` keeps a ``?token=`` link out of other sites' logs, and framing is refused
(click-jacking). The dashboard pages also get a Content-Security-Policy: scripts only from this
origin (no inline script, no eval). Inline *styles* are allowed: the login page is
self-contained (it is shown before a session exists, when the static assets are closed) and the
dashboard sizes its bars with style attributes; a style cannot run code.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rm.api.deps import Caller, caller

OPENAPI_PATH = "/openapi.json"
DOC_PATHS = ("/docs", "/redoc")
BASE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                 "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def add_guarded_docs(app: FastAPI) -> None:
    """Serve the spec and its two viewers to token holders only (any role)."""

    @app.get(OPENAPI_PATH, include_in_schema=False)
    def openapi(who: Caller = Depends(caller)) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def swagger(who: Caller = Depends(caller)) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{app.title} - API")

    @app.get("/redoc", include_in_schema=False)
    def redoc(who: Caller = Depends(caller)) -> HTMLResponse:
        return get_redoc_html(openapi_url=OPENAPI_PATH, title=f"{app.title} - API")


class SecurityHeaders:
    """Add :data:`BASE_HEADERS` to every response and the CSP to every one but the API viewers
    (Swagger UI and ReDoc load their scripts from a CDN and run inline code)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        with_csp = scope.get("path") not in DOC_PATHS

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in BASE_HEADERS.items():
                    headers.setdefault(name, value)
                if with_csp:
                    headers.setdefault("Content-Security-Policy", DASHBOARD_CSP)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def guard(app: FastAPI) -> Any:
    """Install both guards on ``app``."""
    add_guarded_docs(app)
    app.add_middleware(SecurityHeaders)
    return app
