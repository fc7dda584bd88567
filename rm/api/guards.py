"""Guards around the whole app: the API documentation behind a token, security headers, and
NUL characters refused wherever a request carries text.

Why the docs need a token: the OpenAPI spec maps every route and parameter of a system that
holds cloud credentials; only ``/healthz`` is for anyone. FastAPI's own ``/openapi.json``,
``/docs`` and ``/redoc`` are turned off in :func:`rm.api.app.create_app` and served here behind
the same bearer/cookie check as every endpoint (a signed-in dashboard session opens them too).

Why NUL is refused before any route runs: PostgreSQL cannot store U+0000 in text or JSON, so a
NUL in a query parameter, a path or a JSON body would reach the database as a 500 (and SQLite
would keep a string other tools truncate). :class:`RejectNul` answers 422 naming the field, in
FastAPI's error shape, before anything is read or written.

Why the headers on every response: ``nosniff`` keeps a JSON error from being run as a script,
``no-referrer`` keeps a ``?token=`` link out of other sites' logs, and framing is refused
(click-jacking). The dashboard pages also get a Content-Security-Policy: scripts only from this
origin (no inline script, no eval). Inline *styles* are allowed: the login page is
self-contained (it is shown before a session exists, when the static assets are closed) and the
dashboard sizes its bars with style attributes; a style cannot run code.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, unquote

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


class HttpMiddleware:
    """A pure ASGI middleware that handles HTTP requests (:meth:`handle`) and passes the rest on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise NotImplementedError


class SecurityHeaders(HttpMiddleware):
    """Add :data:`BASE_HEADERS` to every response and the CSP to every one but the API viewers
    (Swagger UI and ReDoc load their scripts from a CDN and run inline code)."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
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


NUL = "\x00"
JSON_NUL = b"\\u0000"  # how a NUL travels in JSON text (a raw NUL byte is not JSON at all)


def nul_locations(value: Any, loc: list[Any]) -> Iterator[list[Any]]:
    """Where in a parsed JSON value a string (a key or a value) holds a NUL. Iterative: a body
    nested as deep as the JSON parser allows must not exhaust the stack here."""
    stack: list[tuple[Any, list[Any]]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if NUL in item:
                yield where
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                stack.append((child, [*where, key]))
                if NUL in key:
                    stack.append((key, [*where, key]))
        elif isinstance(item, list):
            stack.extend((child, [*where, index]) for index, child in reversed(list(enumerate(item))))


def _request_nuls(scope: Scope, body: bytes) -> list[list[Any]]:
    found: list[list[Any]] = []
    if NUL in unquote(scope.get("path", "")):
        found.append(["path"])
    query = scope.get("query_string", b"").decode("latin-1")
    found += [["query", name] for name, value in parse_qsl(query, keep_blank_values=True) if NUL in name + value]
    if JSON_NUL in body:
        try:
            found += [["body", *loc] for loc in nul_locations(json.loads(body), [])]
        except (ValueError, RecursionError):
            pass  # not JSON, or nested past what the parser takes: the route's own parsing answers it
    return found


class RejectNul(HttpMiddleware):
    """422 for a NUL character in the path, a query parameter or a JSON body, naming each field."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        messages: list[Message] = []
        while True:  # the body is already bounded by BodySizeLimit, which runs first
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        found = _request_nuls(scope, body)
        if found:
            detail = [{"loc": loc, "msg": "a NUL character (U+0000) is not allowed in text", "type": "nul_character"}
                      for loc in found[:50]]
            await JSONResponse(status_code=422, content={"detail": detail})(scope, receive, send)
            return

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)


def guard(app: FastAPI) -> Any:
    """Install the guards on ``app`` (call it before adding the body size limit, which must run first)."""
    add_guarded_docs(app)
    app.add_middleware(RejectNul)
    app.add_middleware(SecurityHeaders)
    return app
