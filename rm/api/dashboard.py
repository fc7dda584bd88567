"""The dashboard at ``/``: a server-rendered shell, its static assets, and the browser login.

Why these pieces: everything ships in the package (``rm/dashboard/``), so the dashboard works
with no internet; the page itself only polls the JSON API, so what a person sees is what the
API says. Login takes a token once, from the login form or a ``/?token=`` link (as Jupyter
does), and trades it at once for an HttpOnly, SameSite=Strict session cookie; a ``?token=`` is
stripped from the address by a redirect so it does not stay in the history or a screenshot.
Static assets need a session like any other data (only ``/healthz`` is open); the login page is
self-contained for that reason.
"""

from __future__ import annotations

import html
from importlib import resources
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from rm.api.deps import SESSION_COOKIE, Caller, caller
from rm.auth import lookup

router = APIRouter(include_in_schema=False)
ASSETS = {"app.js": "text/javascript", "chart.js": "text/javascript", "style.css": "text/css"}
SESSION_MAX_AGE_S = 12 * 3600


def _asset(name: str) -> str:
    return resources.files("rm").joinpath("dashboard", name).read_text()


def _signed_in(request: Request) -> bool:
    secret = request.cookies.get(SESSION_COOKIE)
    return bool(secret) and lookup(request.app.state.runtime.store, secret) is not None


def _with_session(response: Response, request: Request, token: str) -> Response:
    response.set_cookie(SESSION_COOKIE, token, max_age=SESSION_MAX_AGE_S, httponly=True, samesite="strict",
                        secure=request.url.scheme == "https", path="/")
    return response


def _login_page(message: str = "", code: int = 200) -> HTMLResponse:
    page = _asset("login.html").replace("{{message}}", html.escape(message))
    return HTMLResponse(page, status_code=code, headers={"Cache-Control": "no-store"})


@router.get("/")
def index(request: Request, token: str | None = None) -> Response:
    runtime = request.app.state.runtime
    if token is not None:  # a ?token= link: exchange it at once, and strip it from the address
        if lookup(runtime.store, token) is None:
            return _login_page("That link's token is not valid.", status.HTTP_401_UNAUTHORIZED)
        return _with_session(RedirectResponse("/", status.HTTP_303_SEE_OTHER), request, token)
    if not _signed_in(request):
        return _login_page()
    page = _asset("index.html").replace("{{cluster}}", html.escape(runtime.config().cluster))
    return HTMLResponse(page, headers={"Cache-Control": "no-store"})


@router.post("/login")
async def login(request: Request) -> Response:
    fields = parse_qs((await request.body()).decode("utf-8", "replace"))
    token = (fields.get("token") or [""])[0].strip()
    if not token or lookup(request.app.state.runtime.store, token) is None:
        return _login_page("Unknown token.", status.HTTP_401_UNAUTHORIZED)
    return _with_session(RedirectResponse("/", status.HTTP_303_SEE_OTHER), request, token)


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/", status.HTTP_303_SEE_OTHER)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/static/{name}")
def asset(name: str, who: Caller = Depends(caller)) -> Response:  # a session or a bearer token, like any endpoint
    if name not in ASSETS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {name}")
    return Response(_asset(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
